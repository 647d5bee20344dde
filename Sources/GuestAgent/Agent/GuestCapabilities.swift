#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix

/// Which capabilities (capabilities(7)) guest commands and the agent itself may hold.
///
/// Every command the agent spawns gets at most `guestDefault` in its bounding set, an empty
/// ambient set and no_new_privs (csys_spawn's capabilityBound, capabilitySets and noNewPrivs
/// stages), whatever its seccomp profile. The agent, once it serves, keeps `agentKeeps(role:)`
/// in every set (bounding, permitted, effective) and drops the rest.
public enum GuestCapabilities {
    /// Capability numbers from linux/capability.h (the C macros are not imported).
    public enum Capability: Int, CaseIterable, Sendable {
        case chown = 0, dacOverride = 1, dacReadSearch = 2, fowner = 3, fsetid = 4, kill = 5, setgid = 6, setuid = 7
        case setpcap = 8, linuxImmutable = 9, netBindService = 10, netBroadcast = 11, netAdmin = 12, netRaw = 13
        case ipcLock = 14, ipcOwner = 15, sysModule = 16, sysRawio = 17, sysChroot = 18, sysPtrace = 19
        case sysPacct = 20, sysAdmin = 21, sysBoot = 22, sysNice = 23, sysResource = 24, sysTime = 25
        case sysTtyConfig = 26, mknod = 27, lease = 28, auditWrite = 29, auditControl = 30, setfcap = 31
        case macOverride = 32, macAdmin = 33, syslog = 34, wakeAlarm = 35, blockSuspend = 36, auditRead = 37
        case perfmon = 38, bpf = 39, checkpointRestore = 40

        var bit: UInt64 { 1 << UInt64(rawValue) }
    }

    public static func mask(_ capabilities: [Capability]) -> UInt64 {
        capabilities.reduce(0) { $0 | $1.bit }
    }

    /// The set container runtimes give a container by default (Docker, containerd, CRI-O):
    /// enough for a root command to own files, switch users, bind low ports and use raw
    /// sockets, nothing that reaches the kernel's or the host's shared state.
    /// 0x00000000a80425fb, as /proc/PID/status writes it.
    public static let guestDefaultSet: [Capability] = [
        .chown, .dacOverride, .fowner, .fsetid, .kill, .setgid, .setuid, .setpcap, .netBindService, .netRaw,
        .sysChroot, .mknod, .auditWrite, .setfcap,
    ]
    public static let guestDefault = mask(guestDefaultSet)

    /// What the agent keeps once it serves.
    /// - The guest set itself: under no_new_privs a command run as root ends up with the
    ///   agent's permitted set cut down to the bounding set, so whatever the agent lacks,
    ///   its commands lack too. Among them what the agent needs for its own work: SETUID,
    ///   SETGID (spawning as other users), SETPCAP (lowering each child's bounding set), KILL
    ///   (signalling sessions of other users), CHOWN (the pty of a command run as another
    ///   user), DAC_OVERRIDE and FOWNER (file work on the guest's behalf).
    /// - SYS_RESOURCE: an exec request's rlimits may raise a hard limit, which setrlimit(2)
    ///   allows only with it; the child applies them before it drops to the guest set.
    /// - A VM's PID 1 (`machineInit`) also SYS_ADMIN and SYS_BOOT: it unmounts the file
    ///   systems and calls reboot(2) to power off. A PID namespace's init just exits, and the
    ///   agent beside an init asks that init to power off (a signal or a FIFO).
    /// Everything else (SYS_ADMIN in a sandbox, DAC_READ_SEARCH, SYS_PTRACE, SYS_MODULE,
    /// NET_ADMIN, SYS_TIME, ...) goes: a command that took the agent over gets no more.
    public static func agentKeeps(role: Agent.Role) -> UInt64 {
        var kept = guestDefault | Capability.sysResource.bit
        if role == .machineInit { kept |= mask([.sysAdmin, .sysBoot]) }
        return kept
    }

    /// Why the agent could not lower its own capabilities.
    public struct DropError: Error, Equatable, CustomStringConvertible {
        public var step: String
        public var errno: Errno
        public var description: String { "\(step): \(errno)" }
    }

    /// Lowers the agent's own bounding, permitted, effective and inheritable sets to
    /// `agentKeeps(role:)`, clears its ambient set, and makes it non-dumpable (its /proc
    /// entries, /proc/1/fd and /proc/1/mem included, become root's alone, and ptrace needs
    /// CAP_SYS_PTRACE, which no command has). Call once boot is done, never before an init
    /// is exec'd: the hand-off forks first, so an init such as systemd keeps what it needs
    /// (SYS_ADMIN for its mounts and cgroups, ...) and only the serving agent drops.
    /// Capabilities belong to a thread: the agent serves from one thread and starts none.
    /// `.subreaper` (development, and tests that run the agent inside their own process)
    /// keeps everything here (a standalone one lowers its bounding set alone at start:
    /// `lowerStandaloneBoundingSet`); its children are bounded all the same.
    public static func dropAgentBoundingSet(role: Agent.Role) throws(DropError) {
        guard role != .subreaper else { return }
        let kept = agentKeeps(role: role)
        try lowerBoundingSet(to: kept)
        var result = csys_capability_limit_sets(kept, 1)
        if result < 0 { throw DropError(step: "capset", errno: Errno(rawValue: -result)) }
        result = csys_set_dumpable(0)
        if result < 0 { throw DropError(step: "PR_SET_DUMPABLE", errno: Errno(rawValue: -result)) }
    }

    /// A standalone agent that is not PID 1 (`.subreaper`: a development agent on a host
    /// socket, the benchmark's) lowers its bounding set alone to `agentKeeps(role: .subreaper)`,
    /// keeping its permitted and effective sets. Its commands are bounded either way, but each
    /// child would otherwise drop 27 capabilities itself, and every PR_CAPBSET_DROP commits a
    /// new set of credentials: ~25 us of each spawn here (csys_spawn returned after 90 us, and
    /// after 65 us from a parent whose bound was lowered already), which a PID 1 agent, lowered
    /// at boot, does not pay either. Never for an agent inside another program's process
    /// (tests): the bound would cap what that program's own later execs may gain.
    public static func lowerStandaloneBoundingSet() throws(DropError) {
        try lowerBoundingSet(to: agentKeeps(role: .subreaper))
    }

    /// Drops every capability outside `kept` from the calling thread's bounding set.
    private static func lowerBoundingSet(to kept: UInt64) throws(DropError) {
        let result = csys_capability_bound(kept)
        if result < 0 { throw DropError(step: "PR_CAPBSET_DROP", errno: Errno(rawValue: -result)) }
    }

    /// The calling thread's bounding set, bit N for capability N (PR_CAPBSET_READ is what
    /// /proc/self/status's CapBnd shows).
    public static func currentBoundingSet() -> UInt64 {
        var bound: UInt64 = 0
        for capability in 0..<64 {
            let present = csys_capability_in_bounding_set(CInt(capability))
            if present < 0 { break }
            if present == 1 { bound |= 1 << UInt64(capability) }
        }
        return bound
    }
}
