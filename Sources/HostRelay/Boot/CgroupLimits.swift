/// What a namespace sandbox's cgroup limits: every sandbox gets a pids limit, a memory limit and
/// the device allow-list unless its config says otherwise; cpu only when asked for.
///
/// Defaults (`tether boot --pids N --memory MiB` override them):
/// - pids: 4096 processes and threads, enough for a distribution's init with its services and
///   a parallel build, and a stop for a fork bomb long before the host's pid space runs out.
/// - memory: 1024 MiB, as much as a small VM; the kernel's OOM killer acts inside the sandbox
///   when it is reached, not on the host.
/// - devices: `DeviceRule.sandboxDefaults`.
public struct CgroupLimits: Sendable, Equatable {
    public static let defaultPids = 4096
    public static let defaultMemoryMiB = 1024

    /// CPUs' worth of time (cpu.max / cpu.cfs_quota_us); nil: no cpu limit.
    public var cpus: Int?
    public var memoryMiB: Int?
    public var pids: Int?
    /// The devices allowed; nil: no allow-list (every device, as the host's own cgroup has).
    public var devices: [DeviceRule]?
    /// Whether memory and pids came from the config (a warning then names the option) rather
    /// than from the defaults.
    var memoryFromConfig = false
    var pidsFromConfig = false

    public init(cpus: Int? = nil, memoryMiB: Int? = nil, pids: Int? = nil, devices: [DeviceRule]? = nil) {
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.pids = pids
        self.devices = devices
    }

    /// The limits of a namespace sandbox booted with `config`: its options, else the defaults.
    public init(_ config: SandboxConfig) {
        self.init(cpus: config.cpus, memoryMiB: config.memoryMiB ?? Self.defaultMemoryMiB,
                  pids: config.pidsLimit ?? Self.defaultPids, devices: DeviceRule.sandboxDefaults)
        memoryFromConfig = config.memoryMiB != nil
        pidsFromConfig = config.pidsLimit != nil
    }

    /// How warnings name each limit: the option the user gave, the default, or (limits built
    /// by other code) the value.
    var memoryLabel: String {
        guard let memoryMiB else { return "" }
        if memoryFromConfig { return "--memory \(memoryMiB)" }
        return memoryMiB == Self.defaultMemoryMiB ? "the default memory limit (\(memoryMiB) MiB; --memory sets another)"
            : "a memory limit of \(memoryMiB) MiB"
    }
    var pidsLabel: String {
        guard let pids else { return "" }
        if pidsFromConfig { return "--pids \(pids)" }
        return pids == Self.defaultPids ? "the default pids limit (\(pids); --pids sets another)" : "a pids limit of \(pids)"
    }
    var cpusLabel: String { cpus.map { "--cpus \($0)" } ?? "" }
}
