#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// The policies Tether ships. Why each entry is there is documented in SECCOMP.md.

extension SeccompPolicy {
    /// Refused with EPERM under `default`, the profile of every guest command unless it asks
    /// for another: at least what container runtimes' default profiles refuse. Calls that reach
    /// the kernel's or the host's shared state, that the kernel does not namespace, or that
    /// exist only for old binaries and exploits.
    public static let defaultDeniedSyscalls: [String] = [
        // Filesystem namespace changes, old and new mount API (the new one would otherwise
        // bypass a `mount`-only rule).
        "mount", "umount2", "umount", "pivot_root",
        "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
        // Opening files by handle, around the mount namespace ("shocker"), and making handles.
        "open_by_handle_at", "name_to_handle_at",
        // The kernel keyring is not namespaced.
        "keyctl", "add_key", "request_key",
        // Loading code into, instrumenting or replacing the kernel.
        "bpf", "perf_event_open", "kexec_load", "kexec_file_load",
        "init_module", "finit_module", "delete_module", "create_module", "get_kernel_syms", "query_module",
        // A favourite primitive for kernel exploits' race windows; io_uring a large attack
        // surface that also sidesteps this filter (its operations are not system calls).
        "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
        // Machine-wide state: the clock, power, swap, accounting, quotas, the kernel log.
        "settimeofday", "clock_settime", "clock_settime64", "stime",
        "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "vhangup",
        // Hardware access and obsolete calls no current program makes.
        "iopl", "ioperm", "vm86", "vm86old", "pciconfig_read", "pciconfig_write", "pciconfig_iobase",
        "lookup_dcookie", "nfsservctl", "_sysctl", "sysfs", "ustat", "uselib",
        // Joining another process's namespaces.
        "setns",
    ]

    /// Refused under `restricted` on top of `defaultDeniedSyscalls`: reading or writing other
    /// processes, chroot, and the clock-adjusting calls that `default` leaves to the kernel's
    /// CAP_SYS_TIME check (see SECCOMP.md).
    public static let restrictedOnlyDeniedSyscalls: [String] = [
        "ptrace", "process_vm_readv", "process_vm_writev", "chroot", "adjtimex", "clock_adjtime", "clock_adjtime64",
    ]

    /// Rules both guest profiles share besides plain EPERM: namespace flags of unshare and
    /// clone, clone3, and unusual personalities.
    static var guestArgumentRules: [Rule] {
        // unshare(2) and clone(2) with any namespace flag. One rule per flag: rules for the
        // same call and action are alternatives, and a rule may test an argument only once.
        var rules = CloneFlags.namespaces.map { Rule("unshare", .errno(EPERM), when: [.hasBits(argument: 0, $0)]) }
        rules += [CloneFlags.newTime].map { Rule("unshare", .errno(EPERM), when: [.hasBits(argument: 0, $0)]) }
        // clone's flags are argument 0 on x86_64, i386, x32 and aarch64. CLONE_NEWTIME is left
        // out: for clone that bit is part of the exit signal, and clone cannot make a time
        // namespace anyway.
        rules += CloneFlags.namespaces.map { Rule("clone", .errno(EPERM), when: [.hasBits(argument: 0, $0)]) }
        // clone3 passes its flags in memory, where seccomp cannot look. ENOSYS makes the C
        // library fall back to clone, whose flags the rules above inspect (the approach of
        // container runtimes' default profiles).
        rules.append(Rule("clone3", .errno(ENOSYS)))
        rules += personalityRules
        return rules
    }

    /// personality(2) only with the personas ordinary programs use: PER_LINUX (0),
    /// PER_LINUX32 (8), UNAME26 (0x20000), PER_LINUX32|UNAME26 (0x20008), and 0xffffffff,
    /// which only asks for the current one. Anything else (READ_IMPLIES_EXEC,
    /// ADDR_NO_RANDOMIZE, ... weaken the process's own defences) is EPERM.
    ///
    /// "Not one of these five" cannot be one rule: libseccomp tests an argument at most once
    /// per rule. The kernel reads the persona as a 32-bit value, and a refused persona is one
    /// with a bit outside {3, 17} set and at least one bit clear. So the refusal is 32 rules of
    /// the form "bit b set and bit c clear", one per bit c, where b is the bit after c in a
    /// cycle through the 30 bits outside {3, 17} (and the first of them for c = 3 and 17).
    /// A refused persona meets one: if one of the 30 bits is clear, walk the cycle from it to
    /// the first set one; if all are set, bit 3 or 17 is the clear one. None of the five
    /// allowed values does: four have no bit outside {3, 17}, 0xffffffff has no clear bit.
    static var personalityRules: [Rule] {
        let free: Set<Int> = [3, 17]
        let cycle = (0..<32).filter { !free.contains($0) }
        return (0..<32).map { clear in
            let set = cycle.firstIndex(of: clear).map { cycle[($0 + 1) % cycle.count] } ?? cycle[0]
            let bitSet: UInt64 = 1 << UInt64(set)
            return Rule("personality", .errno(EPERM),
                        when: [SeccompPolicy.Condition(argument: 0, mask: bitSet | 1 << UInt64(clear), value: bitSet)])
        }
    }

    /// Whether the personality rules refuse `persona` (what the kernel would see: its low
    /// 32 bits). For tests of the construction above.
    static func personalityRefused(_ persona: UInt64) -> Bool {
        personalityRules.contains { rule in
            rule.conditions.allSatisfy { persona & $0.mask == $0.value }
        }
    }

    /// `seccomp: "default"`: everything is allowed except `defaultDeniedSyscalls`, namespace
    /// creation through unshare and clone, and unusual personalities, which fail with EPERM (a
    /// normal error, so programs that probe for a feature carry on); clone3 fails with ENOSYS.
    public static let defaultGuest: SeccompPolicy = {
        let rules = defaultDeniedSyscalls.map { Rule($0, .errno(EPERM)) } + guestArgumentRules
        return SeccompPolicy(name: "default", defaultAction: .allow, rules: rules)
    }()

    /// `seccomp: "restricted"`: everything `default` refuses, and also ptrace,
    /// process_vm_readv/writev, chroot and the clock-adjusting calls.
    public static let restrictedGuest: SeccompPolicy = {
        let denied = defaultDeniedSyscalls + restrictedOnlyDeniedSyscalls
        let rules = denied.map { Rule($0, .errno(EPERM)) } + guestArgumentRules
        return SeccompPolicy(name: "restricted", defaultAction: .allow, rules: rules)
    }()

    /// Calls that only an attacker who took over the relay would make. They end the relay with
    /// SIGSYS and a log line naming the call, rather than failing quietly.
    public static let relayForbiddenSyscalls: [String] = [
        "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2",
        "pivot_root", "chroot", "bpf", "kexec_load", "kexec_file_load", "init_module", "finit_module",
        "delete_module", "setns", "unshare", "userfaultfd", "perf_event_open", "keyctl", "add_key",
        "request_key", "open_by_handle_at", "fsopen", "fsmount", "move_mount", "open_tree", "reboot",
        "fork", "vfork",
    ]

    /// What the relay needs once its sockets and files are open: serving clients, talking to
    /// the agent (including reconnecting), writing and rotating exec.log, and the Swift
    /// runtime's and Foundation's own needs (threads, memory, time). Everything else fails
    /// with EPERM. Derived by tracing the relay under its test workload; see SECCOMP.md.
    public static let relayAllowed: [String] = [
        // I/O on descriptors it has.
        "read", "write", "readv", "writev", "pread64", "pwrite64", "lseek", "close", "fstat",
        "newfstatat", "statx", "fcntl", "ioctl", "dup", "dup2", "dup3", "pipe2", "fsync", "fdatasync",
        "ftruncate",
        // Sockets: accept clients, reach the agent again after it restarts.
        "accept", "accept4", "connect", "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown",
        "getsockopt", "setsockopt", "getsockname", "getpeername", "socketpair",
        // Exposed ports: a TCP listener on the host per port (`tether port expose`).
        "bind", "listen",
        // Their tunnels: bytes spliced socket -> pipe -> socket without copying them.
        "splice",
        // Readiness, timers, signals, wake-ups.
        "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll",
        "select", "pselect6", "eventfd2", "timerfd_create", "timerfd_settime", "timerfd_gettime",
        "signalfd4", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "sigaltstack",
        "restart_syscall",
        // exec.log: create, rotate, list, remove.
        "openat", "open", "rename", "renameat", "renameat2", "unlink", "unlinkat", "mkdir", "mkdirat",
        "getdents64", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getcwd",
        // Memory, threads, time, identity: the runtime's needs.
        "mmap", "munmap", "mprotect", "mremap", "madvise", "brk", "membarrier", "futex",
        "set_robust_list", "get_robust_list", "rseq", "sched_yield", "sched_getaffinity",
        "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
        "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getrandom",
        "uname", "sysinfo", "prlimit64", "getrlimit", "exit", "exit_group",
        // Signalling itself only (abort raises SIGABRT on its own thread).
        "tgkill",
    ]

    /// The relay's self-confinement: an allow-list, EPERM for anything else, SIGSYS for the
    /// calls in `relayForbiddenSyscalls`.
    public static let relay: SeccompPolicy = {
        var rules = relayAllowed.map { Rule($0, .allow) }
        rules += [
            // New sockets only of the families the relay uses: AF_UNIX (1), AF_VSOCK (40), and
            // AF_INET (2) and AF_INET6 (10) for the listeners of exposed ports.
            Rule("socket", .allow, when: [.equals(argument: 0, 1)]),
            Rule("socket", .allow, when: [.equals(argument: 0, 40)]),
            Rule("socket", .allow, when: [.equals(argument: 0, 2)]),
            Rule("socket", .allow, when: [.equals(argument: 0, 10)]),
            // Threads, not processes: clone only with CLONE_THREAD; clone3 hides its flags,
            // so ENOSYS sends the C library back to clone.
            Rule("clone", .allow, when: [.hasBits(argument: 0, CloneFlags.thread)]),
            Rule("clone3", .errno(ENOSYS)),
            // Naming threads (PR_SET_NAME = 15) and reading the name back (16).
            Rule("prctl", .allow, when: [.equals(argument: 0, 15)]),
            Rule("prctl", .allow, when: [.equals(argument: 0, 16)]),
        ]
        rules += relayForbiddenSyscalls.map { Rule($0, .trap) }
        return SeccompPolicy(name: "relay", defaultAction: .errno(EPERM), rules: rules)
    }()
}
