#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import Foundation
import TetherPosix
import TetherProtocol

/// What the supervisor reports when a sandbox does not come up: the boot error someone wrote
/// down, or the end of the console.
extension Supervisor {
    /// Why the sandbox did not come up, if anyone wrote it down: the launcher or krun runner
    /// (the sandbox's `boot-error.json`), else the agent itself, which writes
    /// `/.tether/boot-error.json` inside the guest's root (the overlay's upper layer when
    /// ephemeral). The agent's stages are its own words (`mount /proc`, `init`, ...).
    func bootError() -> BootFailure? {
        if let failure = BootFailure.read(from: paths.bootError) { return failure }
        // The guest wrote this file (and owns it, in a user namespace): read it as any owner's,
        // still never through a link or from a FIFO, and at most JSONFile.readLimit bytes. A
        // layer that is not a directory on the host (tmpfs, image) leaves only the console.
        var written: BootFailure?
        if let directory = agentBootErrorDirectory(),
           let bytes = try? PrivateFiles.read(agentBootErrorFile, in: directory, limit: JSONFile.readLimit, anyOwner: true) {
            written = try? JSONFile.decode(BootFailure.self, from: bytes)
        }
        guard var failure = written ?? agentBootErrorFromConsole() else { return nil }
        failure.message = "the agent: " + failure.message
        return failure
    }

    /// `/.tether/boot-error.json` as the host sees it for this sandbox: krun shares the rootfs
    /// over virtio-fs; the namespace backend's guest writes into its layer, which the host can
    /// read only where it is a directory (a tmpfs or image layer is gone or unmounted by now:
    /// `agentBootErrorFromConsole` covers those).
    var agentBootErrorPath: String {
        let root = config.backend == .namespace ? paths.overlay.appendingPathComponent("layer/upper").path : config.rootfs
        return root + "/.tether/boot-error.json"
    }

    /// The agent also prints its boot error on the console: `tether-agent: boot failed: {json}`.
    func agentBootErrorFromConsole() -> BootFailure? {
        guard let bytes = try? PrivateFiles.readTail(paths.console.path, limit: 16 << 10) else { return nil }
        let size = ((try? FileManager.default.attributesOfItem(atPath: paths.console.path))?[.size] as? UInt64) ?? 0
        // Only what this boot printed: an earlier boot's report is not about this one.
        let fresh = size > consoleStart ? min(Int(size - consoleStart), bytes.count) : 0
        let text = String(decoding: bytes.suffix(fresh), as: UTF8.self)
        let marker = "boot failed: "
        guard let line = text.split(separator: "\n").last(where: { $0.contains(marker) }),
              let range = line.range(of: marker) else { return nil }
        return try? JSONDecoder().decode(BootFailure.self, from: Data(line[range.upperBound...].utf8))
    }

    /// The guest's `/.tether`, opened without following a link there: the guest may have
    /// made it one (to a host path, as the host resolves it), and the host reads and removes
    /// `boot-error.json` in it as root. Nil when it is missing or not a real directory.
    func agentBootErrorDirectory() -> OwnedFD? {
        try? PrivateFiles.openDirectory(URL(fileURLWithPath: agentBootErrorPath).deletingLastPathComponent().path)
    }

    var agentBootErrorFile: String { URL(fileURLWithPath: agentBootErrorPath).lastPathComponent }

    /// The last lines the agent printed, for messages about an agent that died early.
    func consoleTail(lines: Int = 5) -> String {
        guard let bytes = try? PrivateFiles.readTail(paths.console.path, limit: 16 << 10) else { return "" }
        let text = String(decoding: bytes, as: UTF8.self)
        let tail = text.split(separator: "\n").suffix(lines)
        return tail.isEmpty ? "" : "; its console ended with:\n  " + tail.joined(separator: "\n  ")
    }
}
