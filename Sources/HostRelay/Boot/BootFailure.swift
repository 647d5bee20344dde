import Foundation
import TetherPosix

/// Where booting a sandbox failed. A string in `boot-error.json`; the agent may write stages of
/// its own (its PID 1 mounts), so unknown values are kept rather than rejected.
public struct BootStage: RawRepresentable, Hashable, Codable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(String.self) }
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
    public var description: String { rawValue }

    /// The rootfs directory is missing or unusable.
    public static let rootfs = BootStage(rawValue: "rootfs")
    /// Creating namespaces or cgroups, hostname, loopback, descriptors.
    public static let namespace = BootStage(rawValue: "namespace")
    /// Making mounts private, bind/overlay mounting the root, pivot_root.
    public static let mount = BootStage(rawValue: "mount")
    /// The sandbox's user namespace: id ranges, maps, becoming its root.
    public static let userNamespace = BootStage(rawValue: "user-namespace")
    /// /proc, /sys and /dev inside the sandbox, with their masked and read-only paths.
    public static let apiFilesystems = BootStage(rawValue: "api-filesystems")
    /// The sandbox's writable layer (its directory, tmpfs or size).
    public static let layer = BootStage(rawValue: "layer")
    /// dlopen/dlsym of libkrun.
    public static let krunLoad = BootStage(rawValue: "krun-load")
    /// A libkrun configuration call (or krun_start_enter) returned an error.
    public static let krunConfig = BootStage(rawValue: "krun-config")
    /// execve of the agent inside the sandbox.
    public static let agentExec = BootStage(rawValue: "agent-exec")
    /// The agent did not say hello before the deadline, or went away first.
    public static let handshake = BootStage(rawValue: "handshake")
}

/// A sandbox that did not come up: what `boot-error.json` holds, and what the CLI renders as an
/// error block (`message`, then `hint` after an arrow).
public struct BootFailure: Error, Equatable, Codable, Sendable, CustomStringConvertible {
    public var stage: BootStage
    /// The errno of the failing call, 0 when there was none.
    public var errno: Int32
    public var message: String
    /// What to do about it, when we know.
    public var hint: String?

    public init(stage: BootStage, errno: Int32, message: String, hint: String? = nil) {
        self.stage = stage
        self.errno = errno
        self.message = message
        self.hint = hint
    }

    /// "the sandbox did not boot (stage S, ERRNO): MESSAGE", the errno left out when the
    /// message already names it (by symbol or in words).
    public var description: String {
        let code = Errno(rawValue: errno)
        let named = errno == 0 || message.contains(Errno.symbol(errno) ?? "\u{0}") || message.contains(code.message)
        return "the sandbox did not boot (stage \(stage)\(named ? "" : ", \(code)")): \(message)"
    }

    /// Reads a `boot-error.json`; nil when there is none or it is not ours to parse. A link in
    /// its place is not followed; `anyOwner` accepts a file of another user (the guest's).
    public static func read(from url: URL, anyOwner: Bool = false) -> BootFailure? {
        try? JSONFile.read(BootFailure.self, from: url, anyOwner: anyOwner)
    }

    /// Writes `boot-error.json` atomically (a reader never sees half a file; see `JSONFile`).
    public func write(to url: URL) {
        try? JSONFile.write(self, to: url, sortedKeysOnly: true)
    }
}
