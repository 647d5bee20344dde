import Foundation

/// What a sandbox's supervisor says about it in `state.json`. Written by the supervisor only;
/// read by `tether ls`, `tether stop` and `--sandbox NAME`.
public struct SandboxState: Codable, Equatable, Sendable {
    public enum Status: String, Codable, Sendable {
        case booting, running, stopping, stopped, failed
    }

    public var name: String
    public var backend: BackendKind
    public var rootfs: String
    public var status: Status
    /// The supervisor (`tether-sandbox supervise`), which holds the name's lock.
    public var supervisorPid: Int32
    /// When the supervisor started (field 22 of /proc/PID/stat, clock ticks since boot): with
    /// the PID, what `stop` checks before it signals (a PID alone may name another process by then).
    public var supervisorStartTime: UInt64?
    /// The sandbox's first process as the host sees it: namespace PID 1, or the krun runner.
    public var sandboxPid: Int32?
    /// When the sandbox's first process started (as `supervisorStartTime`).
    public var sandboxStartTime: UInt64?
    /// The relay serving `relaySocket`, when one runs.
    public var relayPid: Int32?
    public var agentSocket: String
    public var relaySocket: String
    /// Wall-clock times, seconds since 1970.
    public var startedAt: Double
    public var readyAt: Double?
    public var stoppedAt: Double?
    /// From the start of the sandbox's process to the agent's hello, measured by the host.
    public var bootToHelloMs: Double?
    /// The agent's hello: its protocol version and build.
    public var agentVersion: String?
    /// How the sandbox ended ("exited 0", "killed by SIGKILL", "powered off").
    public var exit: String?
    /// Things the user asked for that this host could not do (cgroup limits, ...).
    public var warnings: [String]
    /// The sandbox's cgroup directories (v2 and v1), for whoever has to clean up after a
    /// supervisor that was killed.
    public var cgroups: [String]?
    /// The guest's network mode, and what `--allow-net` opened (egress).
    public var network: NetworkMode?
    public var allowNet: [String]?
    /// `--network egress`: pasta's state.
    public var egress: EgressState?

    /// The user-mode network component of an `egress` sandbox.
    public struct EgressState: Codable, Equatable, Sendable {
        public var component: String
        public var pid: Int32?
        public var guestAddress: String
        public var gateway: String
        public var nameserver: String
        /// Set when it ended while the sandbox ran ("was killed by signal 9"): the guest has no
        /// outbound network from then on.
        public var ended: String?
    }

    public init(name: String, backend: BackendKind, rootfs: String, status: Status, supervisorPid: Int32,
                agentSocket: String, relaySocket: String, startedAt: Double = Date().timeIntervalSince1970) {
        self.name = name
        self.backend = backend
        self.rootfs = rootfs
        self.status = status
        self.supervisorPid = supervisorPid
        self.agentSocket = agentSocket
        self.relaySocket = relaySocket
        self.startedAt = startedAt
        self.warnings = []
    }

    /// The state, or nil when there is none, or it is not a regular file of ours, or not valid.
    public static func load(from url: URL) -> SandboxState? {
        try? JSONFile.read(SandboxState.self, from: url)
    }

    func save(to url: URL) {
        try? JSONFile.write(self, to: url)
    }
}
