#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// The two policies Tether ships. Why each entry is there is documented in SECCOMP.md.

extension SeccompPolicy {
    /// Calls no ordinary program makes and that let a sandboxed one reach the kernel's or the
    /// host's privileged surface. Restricted guest commands get EPERM for them.
    public static let privilegedSyscalls: [String] = [
        // Filesystem namespace changes, old and new mount API.
        "mount", "umount2", "umount", "pivot_root", "chroot",
        "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
        // Reading or writing other processes.
        "ptrace", "process_vm_readv", "process_vm_writev",
        // Kernel code and the kernel's state.
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
        "bpf", "perf_event_open", "reboot", "swapon", "swapoff", "acct", "quotactl",
        "iopl", "ioperm", "lookup_dcookie", "settimeofday", "clock_settime", "clock_adjtime",
        "nfsservctl", "vhangup",
        // The kernel keyring.
        "keyctl", "add_key", "request_key",
        // Escaping through handles and page-fault handling.
        "open_by_handle_at", "userfaultfd",
    ]

    /// `seccomp: "restricted"`: everything is allowed except the privileged calls above and
    /// creating or joining user namespaces, which fail with EPERM (a normal error, so programs
    /// that probe for them carry on).
    public static let restrictedGuest: SeccompPolicy = {
        var rules = privilegedSyscalls.map { Rule($0, .errno(EPERM)) }
        let newUser = CloneFlags.newUser
        rules += [
            Rule("unshare", .errno(EPERM), when: [.hasBits(argument: 0, newUser)]),
            // clone's flags are argument 0 on x86_64 and aarch64.
            Rule("clone", .errno(EPERM), when: [.hasBits(argument: 0, newUser)]),
            // clone3 passes its flags in memory, where seccomp cannot look. ENOSYS makes the C
            // library fall back to clone, whose flags the rule above inspects (the approach of
            // container runtimes' default profiles).
            Rule("clone3", .errno(ENOSYS)),
            // setns to a user namespace, or with nstype 0 ("any"), which could be one.
            Rule("setns", .errno(EPERM), when: [.equals(argument: 1, newUser)]),
            Rule("setns", .errno(EPERM), when: [.equals(argument: 1, 0)]),
        ]
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
            // New sockets only of the families the relay uses: AF_UNIX (1), AF_VSOCK (40).
            Rule("socket", .allow, when: [.equals(argument: 0, 1)]),
            Rule("socket", .allow, when: [.equals(argument: 0, 40)]),
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
