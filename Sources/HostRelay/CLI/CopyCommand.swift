#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherClient
import TetherPosix
import TetherProtocol

/// `tether cp SRC DST`: files and directories between the host and a sandbox.
enum CopyCommand: Command {
    static let name = "cp"
    static let summary = "copy files and directories into or out of a sandbox"
    static let help = """
        usage: tether cp [OPTIONS] SRC DST

        Copies between the host and a sandbox, as docker cp and kubectl cp do. A guest path is
        NAME:PATH (the sandbox NAME) or :PATH (the sandbox of --sandbox, --socket or
        TETHER_SOCKET); anything else is a local path (write ./a:b for a local name with a
        colon). - is stdin (as SRC) or stdout (as DST). Exactly one side is in the guest.

        A file is streamed whatever its size and written atomically: the old file stays whole
        until the new one is complete, fsynced and checked against its SHA-256, and a copy cut
        short leaves it unchanged. A directory is copied recursively as one tar stream
        (directories, files, symlinks and modes). When DST is an existing directory, SRC is
        copied into it under its own name.

        Options:
          -a, --archive         keep owners (uid and gid) too, not only modes
          -u, --user USER       act as USER in the guest (name, uid, name:group, uid:gid;
                                default root), so the guest's permissions apply
              --no-progress     no progress line (shown on a terminal for long copies)
        \(RelayTarget.helpLines)
        \(TetherCLI.commonHelpLines)

        Exit status: 0 copied; 1 the copy failed (the message names the kind, such as
        fileNotFound, permissionDenied, noSpace, readOnly, checksumMismatch, with the
        operation, path and errno); 2 usage; 125 tether failed (no relay, agent gone).

        """

    static let options: [OptionSpec] = [
        OptionSpec("-a", "--archive"), FileCommands.userOption, OptionSpec("--no-progress"),
    ] + RelayTarget.options

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            guard parsed.positionals.count == 2 else {
                throw UsageError(message: "cp takes SRC and DST (\(parsed.positionals.count) given)", command: name)
            }
            let source = CopyEndpoint(parsed.positionals[0])
            let destination = CopyEndpoint(parsed.positionals[1])
            guard source.isGuest != destination.isGuest else {
                throw UsageError(message: source.isGuest ? "both paths are in a guest; one must be local"
                                 : "neither path is in a guest; write NAME:PATH or :PATH for one", command: name)
            }
            var sandbox: String?
            if case .guest(let name, _) = source { sandbox = name }
            if case .guest(let name, _) = destination { sandbox = name }
            var clientOptions: ClientOptions
            if let sandbox {
                if parsed.value("sandbox") != nil || parsed.value("socket") != nil {
                    throw UsageError(message: "\(sandbox):PATH names the sandbox; drop --sandbox/--socket or write :PATH", command: name)
                }
                clientOptions = ClientOptions(socket: try SandboxResolution.socket(ofSandbox: sandbox))
                clientOptions.name = "tether cp"
            } else {
                clientOptions = try RelayTarget.clientOptions(parsed, command: name)
            }
            let copy = Copy(user: parsed.value("user"), keepOwners: parsed.has("archive"), progress: !parsed.has("no-progress"))
            return FileCommands.run(clientOptions, command: name) { client async throws(FileError) -> Int32 in
                let files = client.files(as: copy.user)
                switch (source, destination) {
                case (.guest(_, let path), _): try await copy.download(files, from: path, to: destination)
                case (_, .guest(_, let path)): try await copy.upload(files, from: source, to: path)
                default: break
                }
                return 0
            }
        }
    }
}

/// One copy's settings and its two directions.
struct Copy: Sendable {
    let user: String?
    let keepOwners: Bool
    let progress: Bool

    static func baseName(_ path: String) -> String {
        let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        return trimmed.split(separator: "/").last.map(String.init) ?? trimmed
    }

    static func joined(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    // MARK: host -> guest

    func upload(_ files: Files, from source: CopyEndpoint, to path: String) async throws(FileError) {
        var target = path
        let guestInfo: FsInfo?
        do { guestInfo = try await files.stat(path) } catch {
            guard error.kind == .fileNotFound else { throw error }
            guestInfo = nil
        }
        let fd: CInt
        var st = stat()
        let label: String
        switch source {
        case .local(let local):
            guard fstatat(AT_FDCWD, local, &st, 0) == 0 else { throw FileCommands.local(Errno(rawValue: errno), op: "stat", path: local) }
            if guestInfo?.type == .dir || path.hasSuffix("/") { target = Self.joined(path, Self.baseName(local)) }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                try await uploadTree(files, from: local, to: target, replacing: guestInfo?.type == .dir && target == path)
                return
            }
            fd = open(local, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw FileCommands.local(Errno(rawValue: errno), op: "open", path: local) }
            label = local
        default:
            if guestInfo?.type == .dir {
                throw FileError.local(.isDirectory, op: "write", path: path, "\(path) is a directory; name the file to write stdin to")
            }
            fd = 0
            label = "stdin"
            st.st_mode = S_IFREG | 0o644
        }
        let reader: LocalSource
        do { reader = try LocalSource(fd: fd, closeWhenDone: fd != 0, label: label) } catch {
            throw FileCommands.local(error, op: "read", path: label)
        }
        let progress = ProgressLine(label: "\(label) -> \(target)", total: fd == 0 ? nil : UInt64(st.st_size), enabled: self.progress)
        var options = FileWriteOptions(mode: UInt32(st.st_mode) & 0o7777)
        if keepOwners {
            options.uid = st.st_uid
            options.gid = st.st_gid
        }
        let counted = reader.map { chunk -> [UInt8] in
            progress.advance(chunk.count)
            return chunk
        }
        defer { progress.finish() }
        do { try await files.write(target, contents: counted, options) } catch {
            reader.cancel()
            throw reader.failure ?? error   // a local read error says more than the cancelled write
        }
    }

    // MARK: guest -> host

    func download(_ files: Files, from path: String, to destination: CopyEndpoint) async throws(FileError) {
        let info = try await files.stat(path)
        var local: String?
        if case .local(let given) = destination {
            var st = stat()
            let isDirectory = fstatat(AT_FDCWD, given, &st, 0) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
            local = isDirectory ? Self.joined(given, Self.baseName(path)) : given
        }
        if info.type == .dir {
            guard let local else {
                throw FileError.local(.isDirectory, op: "read", path: path, "\(path) is a directory; copy it to a local directory")
            }
            try await downloadTree(files, from: path, to: local)
            return
        }
        let stream = try await files.readStream(path)
        guard let local else {
            try await copy(stream, to: 1, label: path)
            return
        }
        // Atomic here too: a temporary file beside the target, renamed over it when complete.
        let temp = Self.joined(URL(fileURLWithPath: local).deletingLastPathComponent().path, ".\(Self.baseName(local)).tether-cp-\(getpid())")
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            stream.cancel()
            throw FileCommands.local(Errno(rawValue: errno), op: "open", path: temp)
        }
        do throws(FileError) {
            try await copy(stream, to: fd, label: "\(path) -> \(local)")
            // Durable before it replaces the old file, as the help promises.
            if fsync(fd) != 0 { throw FileCommands.local(Errno(rawValue: errno), op: "fsync", path: local) }
            if fchmod(fd, mode_t(info.mode)) != 0 { throw FileCommands.local(Errno(rawValue: errno), op: "chmod", path: local) }
            if keepOwners && fchown(fd, info.uid, info.gid) != 0 {
                throw FileCommands.local(Errno(rawValue: errno), op: "chown", path: local)
            }
            if rename(temp, local) != 0 { throw FileCommands.local(Errno(rawValue: errno), op: "rename", path: local) }
            close(fd)
        } catch {
            close(fd)
            unlink(temp)
            throw error
        }
    }

    /// The stream's bytes to a local descriptor (kept open), through a writer thread.
    func copy(_ stream: FileReadStream, to fd: CInt, label: String) async throws(FileError) {
        let sink: LocalSink
        do { sink = try LocalSink(fd: fd, label: label) } catch { throw FileCommands.local(error, op: "write", path: label) }
        try await pump(stream, into: sink, progress: ProgressLine(label: label, total: stream.info?.size, enabled: self.progress))
    }

    /// Every chunk of `stream` into `sink`, counted on `progress`; on a failure of either
    /// side both are cancelled (the guest stops sending, the local writer stops writing).
    func pump(_ stream: FileReadStream, into sink: LocalSink, progress: ProgressLine) async throws(FileError) {
        defer { progress.finish() }
        do throws(FileError) {
            while let chunk = try await stream.next() {
                try await sink.write(chunk)
                progress.advance(chunk.count)
            }
            try await sink.finish()
        } catch {
            sink.cancel()
            stream.cancel()
            throw error
        }
    }
}
