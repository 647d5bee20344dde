#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherClient
import TetherProtocol

/// `tether fs ls|stat|mkdir|rm|mv|cat|watch`: the sandbox's files, one request each.
enum FsCommand: Command {
    static let name = "fs"
    static let summary = "list, inspect, change and watch the sandbox's files"
    static let help = """
        usage: tether fs SUBCOMMAND [OPTIONS] PATH...

        Subcommands (paths are the guest's; relative ones start at /):
          ls [-r] [-l] PATH     list a directory (-r: everything below it; -l: type, mode,
                                size and modification time too)
          stat [-L] PATH        a file's attributes (-L: follow a final symlink)
          mkdir [-p] [-m MODE] PATH
                                make a directory (-p: with its parents, fine if it exists;
                                MODE octal, default 755)
          rm [-r] [-f] PATH     remove (-r: a directory and everything below it; -f: a
                                missing PATH is not an error)
          mv [-f] FROM TO       rename (-f: replace TO if it exists)
          cat PATH              a file's bytes to stdout
          watch [-r] [--exclude NAME] PATH
                                events (create, modify, delete, moveFrom, moveTo, attrib,
                                overflow) as lines, until interrupted

        Options:
          -r, --recursive       ls: everything below PATH; rm: a directory and what it holds;
                                watch: the directories below PATH too
          -l, --long            ls: type, mode, size and modification time
          -L, --follow          stat: follow a final symlink
          -p, --parents         mkdir: make missing parents; an existing directory is fine
          -m, --mode MODE       mkdir: the mode, octal (default 755)
          -f, --force           rm: a missing PATH is not an error; mv: replace TO
              --exclude NAME    watch: leave out NAME and what is below it (repeatable)
          -u, --user USER       act as USER in the guest (default root)
        \(RelayTarget.helpLines)
        \(TetherCLI.commonHelpLines)
                                (for ls, stat and watch, --json prints the output as JSON too)

        Exit status: 0 done; 1 the operation failed (the kind, operation, path and errno are
        printed); 2 usage; 125 tether failed (no relay, agent gone).

        """

    static let options: [OptionSpec] = [
        FileCommands.userOption, OptionSpec("-r", "--recursive"), OptionSpec("-l", "--long"),
        OptionSpec("-L", "--follow"), OptionSpec("-p", "--parents"), OptionSpec("-m", "--mode", value: true),
        OptionSpec("-f", "--force"), OptionSpec("--exclude", value: true),
    ] + RelayTarget.options

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            guard let sub = parsed.positionals.first else { throw UsageError(message: "fs needs a subcommand", command: name) }
            let paths = Array(parsed.positionals.dropFirst())
            let wanted = sub == "mv" ? 2 : 1
            guard ["ls", "stat", "mkdir", "rm", "mv", "cat", "watch"].contains(sub) else {
                throw UsageError(message: "unknown subcommand '\(sub)'", command: name)
            }
            guard paths.count == wanted else { throw UsageError(message: "fs \(sub) takes \(wanted == 2 ? "FROM and TO" : "one PATH")", command: name) }
            var mode: UInt32 = 0o755
            if let text = parsed.value("mode") {
                guard let value = UInt32(text, radix: 8), value <= 0o7777 else {
                    throw UsageError(message: "--mode: '\(text)' is not an octal mode", command: name)
                }
                mode = value
            }
            let json = parsed.has("json")
            let directoryMode = mode
            let flags = (recursive: parsed.has("recursive"), long: parsed.has("long"), follow: parsed.has("follow"),
                         parents: parsed.has("parents"), force: parsed.has("force"), exclude: parsed.all("exclude"))
            let clientOptions = try RelayTarget.clientOptions(parsed, command: name)
            let user = parsed.value("user")
            return FileCommands.run(clientOptions, command: "fs " + sub) { client async throws(FileError) -> Int32 in
                let files = client.files(as: user)
                let path = paths[0]
                switch sub {
                case "ls":
                    let entries = try await files.list(path, recursive: flags.recursive)
                    writeStandardOutput(json ? FsOutput.json(entries) : FsOutput.table(entries, long: flags.long))
                case "stat":
                    let info = try await files.stat(path, follow: flags.follow)
                    writeStandardOutput(json ? FsOutput.json(info) : FsOutput.text(info, path: path))
                case "mkdir":
                    try await files.mkdir(path, mode: directoryMode, parents: flags.parents)
                case "rm":
                    do throws(FileError) { try await files.remove(path, recursive: flags.recursive) } catch {
                        guard flags.force, error.kind == .fileNotFound else { throw error }
                    }
                case "mv":
                    try await files.rename(path, to: paths[1], overwrite: flags.force)
                case "cat":
                    let stream = try await files.readStream(path)
                    try await Copy(user: user, keepOwners: false, progress: false).copy(stream, to: 1, label: path)
                default:
                    let stream = try await files.watch(path, recursive: flags.recursive, exclude: flags.exclude)
                    SignalWatcher.shared.setHandler { _ in stream.cancel() }
                    defer { SignalWatcher.shared.setHandler(nil) }
                    while let event = try await stream.next() {
                        writeStandardOutput(json ? FsOutput.json(event) + "\n" : "\(event.type.rawValue) \(event.path)\n")
                    }
                }
                return 0
            }
        }
    }
}

/// How `tether fs` prints what it got.
enum FsOutput {
    static func modeText(_ type: FileType, _ mode: UInt32) -> String {
        let letter = switch type { case .dir: "d"; case .symlink: "l"; case .file: "-"; case .other: "?" }
        var text = letter
        for shift in [6, 3, 0] {
            let bits = (mode >> UInt32(shift)) & 7
            text += (bits & 4 != 0 ? "r" : "-") + (bits & 2 != 0 ? "w" : "-") + (bits & 1 != 0 ? "x" : "-")
        }
        return text
    }

    static func time(_ ns: Int64) -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return formatter.string(from: Date(timeIntervalSince1970: Double(ns) / 1e9))
    }

    static func table(_ entries: [FileEntry], long: Bool) -> String {
        var out = ""
        for e in entries {
            let name = e.name.description + (e.type == .dir ? "/" : "")
            out += long ? "\(modeText(e.type, e.mode))  \(String(e.size).leftPadded(12))  \(time(e.mtimeNs))  \(name)\n" : name + "\n"
        }
        return out
    }

    static func text(_ info: FsInfo, path: String) -> String {
        var lines = ["path: \(path)", "type: \(info.type.rawValue)", "size: \(info.size)",
                     "mode: \(String(info.mode, radix: 8)) (\(modeText(info.type, info.mode)))", "owner: \(info.uid):\(info.gid)",
                     "modified: \(time(info.mtimeNs))", "inode: \(info.ino)", "links: \(info.nlink)"]
        if let target = info.target { lines.append("target: \(target)") }
        return lines.joined(separator: "\n") + "\n"
    }

    static func json(_ entries: [FileEntry]) -> String {
        JSONText.render(entries.map { ["name": $0.name.description, "type": $0.type.rawValue, "size": $0.size, "mode": $0.mode,
                              "mtimeNs": $0.mtimeNs] as [String: Any] }) + "\n"
    }

    static func json(_ info: FsInfo) -> String {
        var object: [String: Any] = ["type": info.type.rawValue, "size": info.size, "mode": info.mode, "uid": info.uid, "gid": info.gid,
                                     "mtimeNs": info.mtimeNs, "atimeNs": info.atimeNs, "ctimeNs": info.ctimeNs, "ino": info.ino,
                                     "nlink": info.nlink]
        if let target = info.target { object["target"] = target.description }
        return JSONText.render(object) + "\n"
    }

    static func json(_ event: FileEvent) -> String {
        var object: [String: Any] = ["type": event.type.rawValue, "path": event.path.description]
        if let cookie = event.cookie { object["cookie"] = cookie }
        return JSONText.render(object)
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
