#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSeccomp
import CSys
import TetherPosix

public enum SeccompError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A libseccomp call failed (they return -errno).
    case libseccomp(call: String, Errno)
    /// libseccomp does not know this syscall name on any architecture of the filter.
    case unknownSyscall(String)

    public var description: String {
        switch self {
        case .libseccomp(let call, let e): "\(call): \(e)"
        case .unknownSyscall(let name): "unknown syscall '\(name)'"
        }
    }
}

/// A compiled filter. Owns one libseccomp context (released on deinit); used from one thread.
public struct SeccompFilter: ~Copyable {
    private let context: scmp_filter_ctx
    public let policy: SeccompPolicy
    /// Syscalls of the policy that this architecture does not have (e.g. `open` on aarch64):
    /// a rule for a call that cannot be made changes nothing, so they are left out.
    public private(set) var absentSyscalls: [String] = []

    public init(_ policy: SeccompPolicy) throws(SeccompError) {
        guard let context = seccomp_init(Self.raw(policy.defaultAction)) else {
            throw .libseccomp(call: "seccomp_init", Errno(rawValue: ENOMEM))
        }
        var absent: [String] = []
        do { try Self.configure(context, policy, absent: &absent) } catch {
            seccomp_release(context)
            throw error
        }
        self.context = context
        self.policy = policy
        self.absentSyscalls = absent
    }

    private static func configure(_ context: scmp_filter_ctx, _ policy: SeccompPolicy, absent: inout [String]) throws(SeccompError) {
        // NO_NEW_PRIVS is set by whoever installs the filter (required for an unprivileged
        // install; harmless for root): libseccomp's default, kept explicit.
        try check("seccomp_attr_set(CTL_NNP)", seccomp_attr_set(context, SCMP_FLTATR_CTL_NNP, 1))
        // A binary search on the syscall number instead of libseccomp's default list. The
        // kernel runs the filter on every call the child makes, and on each install it also
        // emulates the filter once per syscall number (seccomp_cache_prepare, kernel 5.11+, to
        // find the calls it may allow without running it), with interrupts off: over a list
        // of ~100 rules for three ABIs that emulation was the largest single cost of an exec.
        // An optimisation only: a libseccomp before 2.5 refuses the attribute (EINVAL) and
        // builds the same filter as a list.
        _ = seccomp_attr_set(context, SCMP_FLTATR_CTL_OPTIMIZE, 2)
        if policy.coverCompatibilityABIs && seccomp_arch_native() == cseccomp_arch_x86_64() {
            for arch in [cseccomp_arch_x86(), cseccomp_arch_x32()] {
                let rc = seccomp_arch_add(context, arch)
                if rc != -EEXIST { try check("seccomp_arch_add", rc) }
            }
        }
        for rule in policy.rules {
            let number = seccomp_syscall_resolve_name(rule.syscall)
            if number == __NR_SCMP_ERROR {
                absent.append(rule.syscall)
                continue
            }
            var comparisons = rule.conditions.map { cseccomp_arg($0.argument, $0.mask, $0.value) }
            let rc = comparisons.withUnsafeMutableBufferPointer { buffer in
                seccomp_rule_add_array(context, raw(rule.action), number, UInt32(buffer.count), buffer.baseAddress)
            }
            // -EACCES: the rule's action equals the default action; nothing to add.
            if rc != -EACCES { try check("seccomp_rule_add(\(rule.syscall))", rc) }
        }
    }

    deinit { seccomp_release(context) }

    private static func raw(_ action: SeccompPolicy.Action) -> UInt32 {
        switch action {
        case .allow: cseccomp_act_allow()
        case .errno(let e): cseccomp_act_errno(UInt16(truncatingIfNeeded: e))
        case .trap: cseccomp_act_trap()
        case .killProcess: cseccomp_act_kill_process()
        }
    }

    private static func check(_ call: String, _ rc: CInt) throws(SeccompError) {
        if rc < 0 { throw .libseccomp(call: call, Errno(rawValue: -rc)) }
    }

    /// Installs the filter on the calling process (every thread: TSYNC). Irreversible.
    public func load() throws(SeccompError) {
        // Threads started before the filter (a runtime's workers) must be confined too.
        try Self.check("seccomp_attr_set(CTL_TSYNC)", seccomp_attr_set(context, SCMP_FLTATR_CTL_TSYNC, 1))
        try Self.check("seccomp_load", seccomp_load(context))
    }

    /// The filter as a classic BPF program (`struct sock_filter[]`, 8 bytes per instruction),
    /// for a child to install with prctl(PR_SET_NO_NEW_PRIVS) + seccomp(SECCOMP_SET_MODE_FILTER)
    /// between fork and execve, where libseccomp (which allocates) must not run.
    public func exportBPF() throws(SeccompError) -> [UInt8] {
        let fd = cseccomp_memfd("tether-seccomp")
        guard fd >= 0 else { throw .libseccomp(call: "memfd_create", .current) }
        let memfd = OwnedFD(adopting: fd)
        try Self.check("seccomp_export_bpf", seccomp_export_bpf(context, memfd.raw))
        let size = lseek(memfd.raw, 0, SEEK_END)
        guard size >= 0, lseek(memfd.raw, 0, SEEK_SET) == 0 else { throw .libseccomp(call: "lseek", .current) }
        var program = [UInt8](repeating: 0, count: Int(size))
        var offset = 0
        while offset < program.count {
            let n = program.withUnsafeMutableBytes { Glibc.read(memfd.raw, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .libseccomp(call: "read", .current) }
            offset += n
        }
        return program
    }

    /// Installs a SIGSYS handler that names the trapped syscall on stderr before the process
    /// dies of SIGSYS. Call before `load()`.
    public func reportTraps(prefix: String) throws(SeccompError) {
        let names = policy.syscalls(withAction: .trap)
        var numbers: [CInt] = []
        var kept: [String] = []
        for name in names {
            let number = seccomp_syscall_resolve_name(name)
            if number != __NR_SCMP_ERROR {
                numbers.append(number)
                kept.append(name)
            }
        }
        let cStrings: [UnsafePointer<CChar>?] = kept.map { UnsafePointer(strdup($0)) }
        defer { cStrings.forEach { free(UnsafeMutableRawPointer(mutating: $0)) } }
        let rc = csys_report_sigsys(prefix, numbers, cStrings, CInt(numbers.count))
        try Self.check("sigaction(SIGSYS)", rc)
    }
}
