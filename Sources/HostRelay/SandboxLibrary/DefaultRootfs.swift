import Foundation
import TetherBoot
import TetherPosix

/// The default guest tree: the one recorded in `$TETHER_HOME/default-rootfs` while it still
/// holds the agent, else what rootfs/build.sh assembles (and caches) now, recorded for next time.
public enum DefaultRootfs {
    /// Progress for people (the first assembly takes a while); the CLI prints it on stderr.
    nonisolated(unsafe) public static var onProgress: (@Sendable (String) -> Void)?

    public static func path(home: TetherHome, toolsDirectory: String) throws(SandboxError) -> String {
        let record = home.root.appendingPathComponent("default-rootfs")
        if (try? home.check()) != nil,
           let bytes = try? PrivateFiles.read(record.path, limit: 4096),
           case let recorded = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines),
           !recorded.isEmpty, FileManager.default.isExecutableFile(atPath: recorded + SandboxConfig.defaultAgentPath) {
            return recorded
        }
        guard let script = script(above: toolsDirectory) else {
            throw failure("no default rootfs: rootfs/build.sh was not found above \(toolsDirectory)",
                          hint: "pass a root file system (--rootfs DIR), or set TETHER_ROOTFS_SCRIPT")
        }
        onProgress?("assembling the default rootfs with \(script) (first use; the agent is built if needed)")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script]
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            throw failure("cannot run \(script): \(error)", hint: "check that /bin/bash exists and the script is readable")
        }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let path = String(decoding: data, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        guard process.terminationStatus == 0, !path.isEmpty else {
            throw failure("\(script) failed (exit status \(process.terminationStatus))", hint: "its messages are above; pass --rootfs DIR meanwhile")
        }
        // Only into a $TETHER_HOME of ours (created 0700), never through a link at the name.
        if (try? home.check(create: true)) != nil {
            try? PrivateFiles.writeAtomically(Array((path + "\n").utf8), to: record.path, mode: 0o644)
        }
        return path
    }

    /// rootfs/build.sh of the source tree these tools were built from: `$TETHER_ROOTFS_SCRIPT`,
    /// else the first directory above `toolsDirectory` that has it (.build/debug).
    static func script(above toolsDirectory: String) -> String? {
        if let path = ProcessInfo.processInfo.environment["TETHER_ROOTFS_SCRIPT"], !path.isEmpty { return path }
        var directory = URL(fileURLWithPath: toolsDirectory).standardizedFileURL
        while directory.path != "/" {
            let candidate = directory.appendingPathComponent("rootfs/build.sh").path
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
            directory.deleteLastPathComponent()
        }
        return nil
    }

    private static func failure(_ message: String, hint: String) -> SandboxError {
        .bootFailed(BootFailure(stage: .rootfs, errno: 0, message: message, hint: hint))
    }
}
