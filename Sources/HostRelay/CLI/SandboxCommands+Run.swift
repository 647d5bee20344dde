#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherBoot
import TetherPosix

/// `tether run`: boot a sandbox, run one command in it as `tether exec` would, stop it.
extension SandboxCommands {
    static let runUsage = """
        usage: tether run [--rootfs DIR] [--name NAME] [BOOT OPTIONS] [--] CMD [ARGS...]
        Boots a sandbox, runs CMD in it (as `tether exec` would: its output streams here and its
        exit status is tether's), then stops the sandbox. Without --rootfs it uses the default
        guest tree (busybox and the agent; rootfs/build.sh assembles it on first use and
        $TETHER_HOME/default-rootfs remembers where; delete that file to assemble it anew).
        Without --name the sandbox is called run-XXXXXX and its state is removed afterwards;
        a named one stays in `tether ls` as stopped. BOOT OPTIONS are `tether boot`'s
        (--backend, --cpus, --memory, --pids, --init, --network, --ephemeral, --disk, --replace,
        --replace-grace, --handshake-timeout, --hostname, --seccomp: the profile CMD runs under).
        """

    static func run(_ arguments: [String]) -> Int32 {
        var parser = SandboxArguments(arguments, stopAtPositional: true)
        var options = BootOptions()
        var config: SandboxConfig
        do {
            guard try options.parse(&parser) else {
                print(runUsage)
                return 0
            }
            guard !parser.remaining.isEmpty else { throw UsageError("no command to run") }
            config = options.config
            config.name = options.name ?? SandboxName.random()
        } catch {
            return usageError(error, usage: runUsage)
        }
        guard let rootfs = resolveRootfs(options) else { return CLIExit.failure }
        config.rootfs = rootfs
        let sandboxes = sandboxes()
        let state: SandboxState
        do {
            state = try sandboxes.boot(config, onConflict: options.onConflict)
        } catch {
            return report(error)
        }
        for warning in state.warnings { printWarning(warning) }
        guard state.relayPid != nil else {
            _ = try? sandboxes.stop(config.name, graceMs: 2_000)
            FileHandle.standardError.write(Data("error: the sandbox booted but its relay did not start (see \(sandboxes.home.sandbox(config.name).supervisorLog.path))\n".utf8))
            return CLIExit.tetherFailed
        }
        let status = ExecCommand.run((["--socket", "unix:" + state.relaySocket, "--"] + parser.remaining)[...])
        // The command is over: nothing in the sandbox is worth a long grace.
        do {
            try sandboxes.stop(config.name, graceMs: 2_000)
            // A sandbox nobody named is nobody's to look at again: `tether ls` would only fill
            // up with run-XXXXXX entries. A named one keeps its state (how it ended, its logs).
            if options.name == nil { try? FileManager.default.removeItem(at: sandboxes.home.sandbox(config.name).directory) }
        } catch {
            printWarning("stopping sandbox \(config.name): \(error.message)")
        }
        return status
    }

    /// The default guest tree: the one recorded in `$TETHER_HOME/default-rootfs` while it still
    /// holds the agent, else what rootfs/build.sh assembles (and caches) now.
    static func defaultRootfs() throws -> String {
        let home = TetherHome.fromEnvironment()
        let record = home.root.appendingPathComponent("default-rootfs")
        if (try? home.check()) != nil,
           let bytes = try? PrivateFiles.read(record.path, limit: 4096),
           case let recorded = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines),
           !recorded.isEmpty, FileManager.default.isExecutableFile(atPath: recorded + SandboxConfig.defaultAgentPath) {
            return recorded
        }
        guard let script = rootfsScript() else {
            throw UsageError("no default rootfs: rootfs/build.sh was not found above \(sibling("")); pass --rootfs DIR")
        }
        FileHandle.standardError.write(Data("tether: assembling the default rootfs with \(script) (first use; the agent is built if needed)\n".utf8))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script]
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { throw UsageError("running \(script): \(error)") }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let path = String(decoding: data, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        guard process.terminationStatus == 0, !path.isEmpty else {
            throw UsageError("\(script) failed (exit status \(process.terminationStatus)); its messages are above")
        }
        // Only into a $TETHER_HOME of ours (created 0700), never through a link at the name.
        if (try? home.check(create: true)) != nil {
            try? PrivateFiles.writeAtomically(Array((path + "\n").utf8), to: record.path, mode: 0o644)
        }
        return path
    }

    /// rootfs/build.sh of the source tree this tether was built from: `$TETHER_ROOTFS_SCRIPT`,
    /// else the first directory above the executable that has it (.build/debug/tether).
    static func rootfsScript() -> String? {
        if let path = ProcessInfo.processInfo.environment["TETHER_ROOTFS_SCRIPT"], !path.isEmpty { return path }
        var directory = URL(fileURLWithPath: sibling("")).standardizedFileURL
        while directory.path != "/" {
            let candidate = directory.appendingPathComponent("rootfs/build.sh").path
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
            directory.deleteLastPathComponent()
        }
        return nil
    }
}
