import Foundation

/// How a sandbox is booted.
public enum BackendKind: String, Codable, Sendable, CaseIterable {
    /// Linux namespaces and pivot_root on this host; the agent is PID 1 of a new PID namespace.
    case namespace
    /// A microVM through libkrun, loaded at run time.
    case krun
}

/// The guest's network.
public enum NetworkMode: String, Codable, Sendable, CaseIterable {
    /// The host's network (namespace: no network namespace; krun: libkrun's TSI through the host).
    case host
    /// Loopback only (namespace: a new network namespace with lo up; krun: vsock without TSI).
    /// The default.
    case none
    /// Outbound TCP, UDP and DNS through pasta, with the host's loopback, link-local and private
    /// ranges refused unless `allowNet` opens them (namespace backend; `EgressNetwork`).
    case egress
}

/// What `tether boot` asks for; stored as `config.json` in the sandbox's directory, where the
/// supervisor reads it.
public struct SandboxConfig: Codable, Equatable, Sendable {
    public var name: String
    /// Absolute path of the guest's root directory on the host.
    public var rootfs: String
    public var backend: BackendKind
    /// CPUs: krun's vCPUs (1-255); namespace: a cgroup v2 cpu.max quota, where the host allows.
    public var cpus: Int?
    /// MiB: krun's guest RAM; namespace: cgroup v2 memory.max, where the host allows.
    public var memoryMiB: Int?
    /// Namespace: the most processes and threads the sandbox may have (cgroup pids.max);
    /// nil: `CgroupLimits.defaultPids`. `--pids N`.
    public var pidsLimit: Int? = nil
    /// `--init PATH|auto` handed to the agent: it forks, PID 1 becomes this init.
    public var initSystem: String?
    public var network: NetworkMode
    /// The guest's hostname; the sandbox name when nil.
    public var hostname: String?
    /// Namespace backend: the sandbox's writable layer (the overlay over the read-only image) is
    /// a tmpfs dropped at stop, instead of a directory kept until `tether rm`.
    public var ephemeral: Bool
    /// MiB: the bound of the sandbox's writable layer (namespace backend); nil: the default.
    public var diskMiB: Int?
    /// The agent inside the guest.
    public var agentPath: String
    /// How long the agent has to say hello after the sandbox starts.
    public var handshakeTimeoutMs: UInt64
    /// krun: the library to dlopen instead of searching libkrun.so.1 (also `$TETHER_LIBKRUN`).
    public var krunLibrary: String?
    /// The `tether` executable whose `tether relay` serves `relay.sock` once the agent said
    /// hello (what `--sandbox NAME` connects to); nil: no relay, clients connect to
    /// `agent.sock` themselves (one at a time, as the agent serves one connection).
    public var relayExecutable: String?
    /// The seccomp profile of guest commands whose exec does not name one: the agent's
    /// `--seccomp` (`default`, `restricted` or `none`).
    public var seccomp: String = "default"
    /// The sandbox's relay logs what clients send to stdin too (`--log-stdin`); off by default.
    public var logStdin: Bool? = nil
    /// `--network egress`: ranges (CIDR text, `NetworkRange`) the guest may reach although
    /// they are refused by default (`--allow-net`, repeatable).
    public var allowNet: [String]? = nil

    public static let seccompProfiles = ["default", "restricted", "none"]
    public static let defaultAgentPath = "/sbin/tether-agent"
    public static let defaultHandshakeTimeoutMs: UInt64 = 30_000
    /// krun defaults when --cpus / --memory are not given.
    public static let defaultKrunCPUs = 1
    public static let defaultKrunMemoryMiB = 512

    public init(name: String, rootfs: String, backend: BackendKind = .namespace, cpus: Int? = nil,
                memoryMiB: Int? = nil, initSystem: String? = nil, network: NetworkMode = .none,
                hostname: String? = nil, ephemeral: Bool = false, agentPath: String = SandboxConfig.defaultAgentPath,
                handshakeTimeoutMs: UInt64 = SandboxConfig.defaultHandshakeTimeoutMs, krunLibrary: String? = nil,
                relayExecutable: String? = nil) {
        self.name = name
        self.rootfs = rootfs
        self.backend = backend
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.initSystem = initSystem
        self.network = network
        self.hostname = hostname
        self.ephemeral = ephemeral
        self.agentPath = agentPath
        self.handshakeTimeoutMs = handshakeTimeoutMs
        self.krunLibrary = krunLibrary
        self.relayExecutable = relayExecutable
    }

    /// In the agent's environment on every backend. A static Swift executable looks for its
    /// crash backtracer (swift-backtrace) in a static initializer, before main, through
    /// /proc/self/exe, and aborts ("Unable to obtain Swift runtime path") when /proc is not
    /// mounted yet, which is exactly the state a PID 1 starts in. Naming a backtracer path skips
    /// that lookup; the guest has no swift-backtrace anyway, so backtraces are off.
    static let agentRuntimeEnvironment = "SWIFT_BACKTRACE=enable=no,swift-backtrace=/dev/null"

    /// The agent's arguments after its path, the same for every backend except the address.
    func agentArguments(listen address: String, tunnel: String) -> [String] {
        var arguments = ["--listen", address, "--tunnel", tunnel, "--hostname", hostname ?? name]
        if let initSystem { arguments += ["--init", initSystem] }
        if seccomp != "default" { arguments += ["--seccomp", seccomp] }
        return arguments
    }
}

extension SandboxConfig {
    static func load(from url: URL) throws(SandboxError) -> SandboxConfig {
        do {
            return try JSONDecoder().decode(SandboxConfig.self, from: Data(contentsOf: url))
        } catch {
            throw .state(operation: "read", path: url.path, message: "\(error)")
        }
    }

    func save(to url: URL) throws(SandboxError) {
        do { try JSONFile.write(self, to: url) } catch {
            throw .state(operation: "write", path: url.path, message: "\(error)")
        }
    }
}
