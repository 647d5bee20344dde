#if canImport(Glibc)
import Glibc
#endif
import CSys
import Foundation
import Testing
import TestSupport
@testable import TetherAgent
import TetherProtocol

/// The `seccomp` field of an exec and the agent's `--seccomp` default (issues 7 and 14, guest
/// side): every command runs with at most the default capabilities in its bounding set and
/// no_new_privs; under `default` (what a request that names no profile gets) Docker's deny list
/// fails with EPERM, `restricted` refuses more, `none` drops the filter but not the rest.
@Suite struct SeccompExecTests {
    static let python = "/usr/bin/python3"

    static func restricted(_ script: String) -> ExecRequest { sh(script) { $0.seccomp = .restricted } }

    /// `NoNewPrivs` and `Seccomp` (0 none, 2 filter) as the child's /proc/self/status shows them.
    static let statusScript = "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr '\\t' ' '"
    static let confined = "NoNewPrivs: 1\nSeccomp: 2\n"
    static let unfiltered = "NoNewPrivs: 1\nSeccomp: 0\n"

    /// The capability sets as /proc/self/status shows them.
    static let capabilityScript = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status | tr '\\t' ' '"
    /// Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    /// NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
    static let defaultSet = "00000000a80425fb"
    /// A root command: permitted and effective are the bounding set.
    static let rootCapabilities = "CapInh: 0000000000000000\nCapPrm: \(defaultSet)\nCapEff: \(defaultSet)\nCapBnd: \(defaultSet)\nCapAmb: 0000000000000000\n"
    /// Another user's command: nothing held, the same bound.
    static let userCapabilities = "CapInh: 0000000000000000\nCapPrm: 0000000000000000\nCapEff: 0000000000000000\nCapBnd: \(defaultSet)\nCapAmb: 0000000000000000\n"

    /// Whether this kernel lets a process create a user namespace at all (else the unshare
    /// checks would prove nothing). Asked without a filter: `default` refuses it too.
    static func requireUserNamespaces(_ agent: AgentProcess) throws {
        let probe = try run(agent, sh("unshare -U true") { $0.seccomp = .unfiltered }, id: 999)
        if probe.exited != .code(0) { try Test.cancel("this kernel refuses user namespaces even without a filter: \(probe.stderrText)") }
    }

    /// A command line that attaches with ptrace(PTRACE_ATTACH) to a sleeping child of its own and
    /// prints `attach: ok` or `attach: <strerror>`: python3's ctypes, else a C program built
    /// here with cc; nil when neither exists.
    static func ptraceProbe(in directory: TemporaryDirectory) throws -> [String]? {
        if FileManager.default.isExecutableFile(atPath: python) {
            return [python, "-c", """
                import ctypes, os, subprocess
                libc = ctypes.CDLL(None, use_errno=True)
                libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
                child = subprocess.Popen(["/bin/sleep", "30"])
                try:
                    if libc.ptrace(16, child.pid, None, None) == 0:
                        os.waitpid(child.pid, 0)
                        libc.ptrace(17, child.pid, None, None)
                        print("attach: ok")
                    else:
                        print("attach: " + os.strerror(ctypes.get_errno()))
                finally:
                    child.kill()
                    child.wait()
                """]
        }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/cc") else { return nil }
        try directory.write("probe.c", """
            #include <errno.h>
            #include <signal.h>
            #include <stdio.h>
            #include <string.h>
            #include <sys/ptrace.h>
            #include <sys/wait.h>
            #include <unistd.h>
            int main(void) {
                pid_t child = fork();
                if (child == 0) { pause(); _exit(0); }
                if (ptrace(PTRACE_ATTACH, child, 0, 0) == 0) {
                    waitpid(child, 0, 0);
                    ptrace(PTRACE_DETACH, child, 0, 0);
                    printf("attach: ok\\n");
                } else {
                    printf("attach: %s\\n", strerror(errno));
                }
                kill(child, SIGKILL);
                waitpid(child, 0, 0);
                return 0;
            }

            """)
        let built = try runCommand(["/usr/bin/cc", "-o", directory.path + "/probe", directory.path + "/probe.c"])
        guard built.status == 0 else { return nil }
        return [directory.path + "/probe"]
    }

    @Test(.timeLimit(.minutes(1)))
    func helloAdvertisesSeccomp() throws {
        let agent = try AgentProcess()
        #expect(try agent.handshake().capabilities.contains("seccomp/1"))
    }

    @Test(.timeLimit(.minutes(1)))
    func everyProfileSetsNoNewPrivsAndOnlyNoneHasNoFilter() throws {
        let agent = try startAgent()
        #expect(try run(agent, Self.restricted(Self.statusScript), id: 1).stdoutText == Self.confined)
        #expect(try run(agent, sh(Self.statusScript), id: 2).stdoutText == Self.confined)
        #expect(try run(agent, sh(Self.statusScript) { $0.seccomp = .default }, id: 3).stdoutText == Self.confined)
        #expect(try run(agent, sh(Self.statusScript) { $0.seccomp = .unfiltered }, id: 4).stdoutText == Self.unfiltered)
    }

    /// A standalone agent that is not PID 1 lowers its bounding set at start (so its children
    /// have nothing left to drop) but keeps its own permitted and effective sets.
    @Test(.timeLimit(.minutes(1)))
    func aStandaloneSubreaperLowersOnlyItsBound() throws {
        if getuid() != 0 { try Test.cancel("needs root: an ordinary user's agent has no capabilities to bound") }
        let agent = try startAgent()
        _ = try run(agent, sh("true"), id: 1)   // it serves, so it has started up
        let status = try String(contentsOfFile: "/proc/\(agent.pid)/status", encoding: .utf8)
        func field(_ name: String) -> UInt64? {
            status.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                .flatMap { UInt64($0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces), radix: 16) }
        }
        let mine = GuestCapabilities.currentBoundingSet()
        #expect(field("CapBnd") == GuestCapabilities.agentKeeps(role: .subreaper) & mine)
        // This test process's own permitted set, which the agent inherited and keeps.
        let own = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
            .split(separator: "\n").first { $0.hasPrefix("CapPrm:") }
            .flatMap { UInt64($0.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16) }
        #expect(field("CapEff") == own)
        #expect(field("CapPrm") == own)
    }

    /// The agent here is root with every capability; its commands are not.
    @Test(.timeLimit(.minutes(1)))
    func everyCommandHoldsAtMostTheDefaultCapabilities() throws {
        if getuid() != 0 { try Test.cancel("needs root: an ordinary user's agent has no capabilities to bound") }
        let agent = try startAgent()
        for (id, profile) in zip(UInt32(1)..., [SeccompProfile?.none, .default, .restricted, .unfiltered]) {
            let root = try run(agent, sh(Self.capabilityScript) { $0.seccomp = profile }, id: id)
            #expect(root.stdoutText == Self.rootCapabilities, "profile \(String(describing: profile)): \(root.stderrText)")
        }
        let user = try run(agent, sh(Self.capabilityScript) { $0.user = "nobody" }, id: 10)
        #expect(user.stdoutText == Self.userCapabilities, "\(user.stderrText)")
        // Over a pty too (another path through the spawn).
        let tty = try run(agent, ExecRequest(argv: ["/bin/sh", "-c", "grep CapBnd /proc/self/status"],
                                             tty: TerminalSize(rows: 24, cols: 80)), id: 11)
        #expect(tty.stdoutText.contains(Self.defaultSet), "\(tty.stdoutText)")
    }

    /// A static C program that makes each call named in its arguments once and prints
    /// `NAME: ok` or `NAME: EPERM` (the errno's name); nil without a C compiler and a static
    /// C library.
    static func callProbe(in directory: TemporaryDirectory) throws -> String? {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/cc") else { return nil }
        try directory.write("calls.c", callProbeSource)
        let built = try runCommand(["/usr/bin/cc", "-static", "-O", "-o", directory.path + "/calls", directory.path + "/calls.c"])
        return built.status == 0 ? directory.path + "/calls" : nil
    }

    static let callProbeSource = """
        #define _GNU_SOURCE
        #include <errno.h>
        #include <fcntl.h>
        #include <sched.h>
        #include <stdio.h>
        #include <string.h>
        #include <time.h>
        #include <unistd.h>
        #include <sys/mount.h>
        #include <sys/personality.h>
        #include <sys/syscall.h>
        #include <sys/timex.h>

        /* The same calls through the i386 entry point, from this 64-bit program: int 0x80
         * (the kernel filters it as AUDIT_ARCH_I386). */
        static long i386_call(long number, long a, long b, long c) {
            long r;
            __asm__ volatile ("int $0x80" : "=a"(r) : "a"(number), "b"(a), "c"(b), "d"(c) : "memory");
            if (r < 0 && r > -4096) { errno = (int)-r; return -1; }
            return r;
        }

        static void report(const char *name, long result) {
            if (result >= 0) printf("%s: ok\\n", name);
            else printf("%s: %s\\n", name, strerrorname_np(errno));
        }

        int main(int argc, char **argv) {
            for (int i = 1; i < argc; i++) {
                const char *call = argv[i];
                long r = -1;
                errno = 0;
                if (!strcmp(call, "open_by_handle_at")) {
                    /* A made-up handle of inode 2 (a file system's usual root) on the one of /:
                     * what the "shocker" escape does. Root with CAP_DAC_READ_SEARCH opens it. */
                    struct { unsigned int bytes; int type; unsigned char handle[8]; } fh = { 8, 1, { 2 } };
                    r = syscall(SYS_open_by_handle_at, open("/", O_RDONLY | O_DIRECTORY), &fh, O_RDONLY);
                } else if (!strcmp(call, "name_to_handle_at")) {
                    struct { unsigned int bytes; int type; unsigned char handle[128]; } fh = { 128, 0, { 0 } };
                    int mount_id;
                    r = syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &fh, &mount_id, 0);
                } else if (!strcmp(call, "keyctl")) {
                    r = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session keyring */, 0);
                } else if (!strcmp(call, "bpf")) {
                    r = syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, NULL, 0);
                } else if (!strcmp(call, "perf_event_open")) {
                    r = syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
                } else if (!strcmp(call, "userfaultfd")) {
                    r = syscall(SYS_userfaultfd, 0);
                } else if (!strcmp(call, "io_uring_setup")) {
                    unsigned char params[120] = { 0 };
                    r = syscall(SYS_io_uring_setup, 1, params);
                } else if (!strcmp(call, "unshare_newns")) {
                    r = unshare(CLONE_NEWNS);
                } else if (!strcmp(call, "unshare_newnet")) {
                    r = unshare(CLONE_NEWNET);
                } else if (!strcmp(call, "setns")) {
                    r = syscall(SYS_setns, -1, 0);
                } else if (!strcmp(call, "clone3")) {
                    r = syscall(SYS_clone3, NULL, 0);
                } else if (!strcmp(call, "mount")) {
                    /* On the working directory: the test's own temporary one. */
                    r = mount("none", ".", "tmpfs", 0, NULL);
                } else if (!strcmp(call, "clock_settime")) {
                    /* An invalid time: the kernel answers EINVAL before it checks privilege,
                     * so the clock is never set, with or without a filter. */
                    struct timespec bad = { 0, -1 };
                    r = syscall(SYS_clock_settime, CLOCK_REALTIME, &bad);
                } else if (!strcmp(call, "adjtimex_read")) {
                    struct timex t = { 0 };
                    r = adjtimex(&t);
                } else if (!strcmp(call, "adjtimex_set")) {
                    /* Writes back the status it read: no change even where it is allowed. */
                    struct timex t = { 0 };
                    adjtimex(&t);
                    t.modes = ADJ_STATUS;
                    r = adjtimex(&t);
                } else if (!strcmp(call, "personality_query")) {
                    r = personality(0xffffffff);
                } else if (!strcmp(call, "personality_linux32")) {
                    r = personality(PER_LINUX32);
                    if (r >= 0) r = personality(PER_LINUX);
                } else if (!strcmp(call, "personality_read_implies_exec")) {
                    r = personality(READ_IMPLIES_EXEC);
                    if (r >= 0) personality(PER_LINUX);
                } else if (!strcmp(call, "chroot")) {
                    r = chroot("/");
                } else if (!strcmp(call, "i386_getpid")) {
                    r = i386_call(20, 0, 0, 0);
                } else if (!strcmp(call, "i386_keyctl")) {
                    r = i386_call(288, 0, -3, 0);
                } else if (!strcmp(call, "i386_setns")) {
                    r = i386_call(346, -1, 0, 0);
                } else if (!strcmp(call, "i386_unshare_newns")) {
                    r = i386_call(310, CLONE_NEWNS, 0, 0);
                } else if (!strcmp(call, "i386_personality_read_implies_exec")) {
                    r = i386_call(136, READ_IMPLIES_EXEC, 0, 0);
                    if (r >= 0) personality(PER_LINUX);
                } else if (!strcmp(call, "syslog")) {
                    r = syscall(SYS_syslog, 10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0);
                } else {
                    printf("%s: unknown\\n", call);
                    continue;
                }
                report(call, r);
            }
            return 0;
        }

        """

    /// Runs the probe under `profile` and returns what each call answered.
    static func calls(_ agent: AgentProcess, _ probe: String, _ names: [String], profile: SeccompProfile?,
                      id: UInt32) throws -> [String: String] {
        // The working directory is the probe's, where its mount call would land.
        let directory = String(probe[..<(probe.lastIndex(of: "/") ?? probe.endIndex)])
        defer { _ = umount2(directory, CInt(MNT_DETACH)) }
        let t = try run(agent, ExecRequest(argv: ([probe] + names).map { OSString($0) }, cwd: OSString(directory), seccomp: profile), id: id)
        #expect(t.exited == .code(0), "\(t.stderrText) \(String(describing: t.failed))")
        var answers: [String: String] = [:]
        for line in t.stdoutText.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2 { answers[parts[0]] = parts[1] }
        }
        return answers
    }

    /// What container runtimes' default profiles refuse is EPERM under `default`, the profile
    /// of a request that names none; reads and ordinary personalities still work.
    @Test(.timeLimit(.minutes(2)))
    func defaultRefusesTheContainerDenyListWithEPERM() throws {
        let dir = try TemporaryDirectory("tether-calls")
        #expect(chmod(dir.path, 0o755) == 0)
        guard let probe = try Self.callProbe(in: dir) else {
            try Test.cancel("no cc with a static C library: cannot build the system-call probe")
        }
        let agent = try startAgent()
        let refused = ["open_by_handle_at", "name_to_handle_at", "keyctl", "bpf", "perf_event_open", "userfaultfd",
                       "io_uring_setup", "unshare_newns", "unshare_newnet", "setns", "mount", "clock_settime",
                       "personality_read_implies_exec", "syslog"]
        let allowed = ["adjtimex_read", "personality_query", "personality_linux32", "chroot"]
        for (id, profile) in [(UInt32(1), SeccompProfile?.none), (2, .default)] {
            let answers = try Self.calls(agent, probe, refused + allowed + ["clone3"], profile: profile, id: id)
            for call in refused { #expect(answers[call] == "EPERM", "\(call) under \(String(describing: profile)): \(answers[call] ?? "-")") }
            for call in allowed { #expect(answers[call] == "ok", "\(call) under \(String(describing: profile)): \(answers[call] ?? "-")") }
            // ENOSYS: the C library falls back to clone, whose flags the filter can read.
            #expect(answers["clone3"] == "ENOSYS")
            // Setting the clock through adjtimex: the kernel's CAP_SYS_TIME check refuses it.
            #expect(try Self.calls(agent, probe, ["adjtimex_set"], profile: profile, id: id + 10)["adjtimex_set"] == "EPERM")
        }
        // The same calls without a filter: the kernel answers them itself (an error of its own
        // for bad arguments, or success), so the EPERMs above were the filter's.
        let open = try Self.calls(agent, probe, ["keyctl", "setns", "clock_settime", "personality_read_implies_exec", "clone3"],
                                  profile: .unfiltered, id: 20)
        #expect(open == ["keyctl": "ok", "setns": "EBADF", "clock_settime": "EINVAL", "personality_read_implies_exec": "ok",
                         "clone3": "EINVAL"], "\(open)")
        // And without a filter the capability bound still refuses what needs CAP_SYS_ADMIN or
        // CAP_DAC_READ_SEARCH.
        let bounded = try Self.calls(agent, probe, ["open_by_handle_at", "unshare_newns", "mount"], profile: .unfiltered, id: 21)
        #expect(bounded == ["open_by_handle_at": "EPERM", "unshare_newns": "EPERM", "mount": "EPERM"], "\(bounded)")
    }

    /// A 64-bit program making i386 system calls (int 0x80) meets the same rules.
    @Test(.timeLimit(.minutes(1)))
    func theSameRulesHoldForThe32BitEntryPoint() throws {
        let dir = try TemporaryDirectory("tether-calls")
        #expect(chmod(dir.path, 0o755) == 0)
        guard let probe = try Self.callProbe(in: dir) else {
            try Test.cancel("no cc with a static C library: cannot build the system-call probe")
        }
        let agent = try startAgent()
        let open = try Self.calls(agent, probe, ["i386_getpid", "i386_keyctl", "i386_setns", "i386_personality_read_implies_exec"],
                                  profile: .unfiltered, id: 1)
        if open["i386_getpid"] != "ok" { try Test.cancel("this kernel has no i386 entry point (IA32 emulation): \(open)") }
        #expect(open == ["i386_getpid": "ok", "i386_keyctl": "ok", "i386_setns": "EBADF", "i386_personality_read_implies_exec": "ok"],
                "\(open)")
        let filtered = try Self.calls(agent, probe, ["i386_getpid", "i386_keyctl", "i386_setns", "i386_unshare_newns",
                                                     "i386_personality_read_implies_exec"], profile: nil, id: 2)
        #expect(filtered == ["i386_getpid": "ok", "i386_keyctl": "EPERM", "i386_setns": "EPERM", "i386_unshare_newns": "EPERM",
                             "i386_personality_read_implies_exec": "EPERM"], "\(filtered)")
    }

    @Test(.timeLimit(.minutes(1)))
    func restrictedRefusesMoreThanDefault() throws {
        let dir = try TemporaryDirectory("tether-calls")
        #expect(chmod(dir.path, 0o755) == 0)
        guard let probe = try Self.callProbe(in: dir) else {
            try Test.cancel("no cc with a static C library: cannot build the system-call probe")
        }
        let agent = try startAgent()
        let answers = try Self.calls(agent, probe, ["chroot", "adjtimex_read", "open_by_handle_at", "personality_query"],
                                     profile: .restricted, id: 1)
        #expect(answers == ["chroot": "EPERM", "adjtimex_read": "EPERM", "open_by_handle_at": "EPERM", "personality_query": "ok"],
                "\(answers)")
    }

    @Test(.timeLimit(.minutes(1)))
    func restrictedRefusesMountWithEPERM() throws {
        let dir = try TemporaryDirectory("tether-mnt")
        // Should the filter ever fail to apply, the mount below lands on the host: undo it.
        defer {
            let mounts = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
            if mounts.contains(" \(dir.path) ") { _ = umount2(dir.path, CInt(MNT_DETACH)) }
        }
        let agent = try startAgent()
        let tool = try run(agent, Self.restricted("mount -t tmpfs none \(dir.path)"), id: 1)
        #expect(tool.exited != .code(0))
        #expect(!tool.stderrText.isEmpty)
        let mounts = try String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)
        #expect(!mounts.contains(" \(dir.path) "), "the restricted mount happened")

        // The errno itself, from the raw call (mount(8) words EPERM in its own way).
        guard FileManager.default.isExecutableFile(atPath: Self.python) else {
            try Test.cancel("python3 is missing: mount(8) failed, but its errno cannot be read directly")
        }
        let raw = try run(agent, ExecRequest(argv: [OSString(Self.python), "-c", OSString("""
            import ctypes, errno
            libc = ctypes.CDLL(None, use_errno=True)
            r = libc.mount(b"none", b"\(dir.path)", b"tmpfs", 0, None)
            print(r, errno.errorcode.get(ctypes.get_errno(), "0"))
            """)], seccomp: .restricted), id: 2)
        #expect(raw.stdoutText == "-1 EPERM\n", "\(raw.stderrText)")
    }

    @Test(.timeLimit(.minutes(1)))
    func restrictedRefusesUserNamespacesWithEPERM() throws {
        let agent = try startAgent()
        try Self.requireUserNamespaces(agent)
        let t = try run(agent, Self.restricted("unshare -U true"), id: 1)
        #expect(t.exited == .code(1))
        #expect(t.stderrText.contains("Operation not permitted"), "\(t.stderrText)")
        // busybox's unshare too, where it is installed.
        if FileManager.default.isExecutableFile(atPath: "/bin/busybox") {
            let bb = try run(agent, Self.restricted("busybox unshare -U true"), id: 2)
            #expect(bb.exited != .code(0))
            #expect(bb.stderrText.contains("Operation not permitted"), "\(bb.stderrText)")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func restrictedRefusesPtraceAttachWithEPERM() throws {
        let dir = try TemporaryDirectory("tether-ptrace")
        guard let probe = try Self.ptraceProbe(in: dir) else {
            try Test.cancel("neither python3 nor a working cc: no way to call ptrace(PTRACE_ATTACH)")
        }
        let agent = try startAgent()
        let argv = probe.map { OSString($0) }
        // Root may attach to its own child without a filter: the EPERM below is the filter's.
        let control = try run(agent, ExecRequest(argv: argv), id: 1)
        #expect(control.stdoutText == "attach: ok\n", "\(control.stderrText)")
        let confined = try run(agent, ExecRequest(argv: argv, seccomp: .restricted), id: 2)
        #expect(confined.stdoutText == "attach: Operation not permitted\n", "\(confined.stderrText)")
        #expect(confined.exited == .code(0))
    }

    @Test(.timeLimit(.minutes(1)))
    func ordinaryProgramsWorkUnderRestricted() throws {
        let agent = try startAgent()
        let pipeline = try run(agent, Self.restricted("printf abc | cat | sha256sum"), id: 1)
        #expect(pipeline.stdoutText == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  -\n")
        #expect(pipeline.exited == .code(0))
        // Threads, subprocesses (clone without CLONE_NEWUSER; clone3 falls back) and files.
        let dir = try TemporaryDirectory("tether-files")
        let files = try run(agent, Self.restricted("echo kept > \(dir.path)/f && cat \(dir.path)/f && (sleep 0.01 & wait) && echo done"), id: 2)
        #expect(files.stdoutText == "kept\ndone\n")
        if FileManager.default.isExecutableFile(atPath: Self.python) {
            let py = try run(agent, ExecRequest(argv: [OSString(Self.python), "-c", """
                import threading, subprocess, hashlib
                t = threading.Thread(target=lambda: None); t.start(); t.join()
                out = subprocess.run(["/bin/echo", "child"], capture_output=True).stdout.decode()
                print(out.strip(), hashlib.sha256(b"abc").hexdigest()[:8])
                """], seccomp: .restricted), id: 3)
            #expect(py.stdoutText == "child ba7816bf\n", "\(py.stderrText)")
        }
        // A pty session under the filter too.
        let tty = try run(agent, ExecRequest(argv: ["/bin/sh", "-c", "tty >/dev/null && echo term"],
                                             tty: TerminalSize(rows: 24, cols: 80), seccomp: .restricted), id: 4)
        #expect(tty.stdoutText.contains("term"))
    }

    /// no_new_privs: a set-user-ID root program run by another user does not become root,
    /// whatever the profile.
    @Test(.timeLimit(.minutes(1)))
    func setuidProgramsRunWithoutTheirPrivilegeUnderEveryProfile() throws {
        let dir = try TemporaryDirectory("tether-suid")
        #expect(chmod(dir.path, 0o755) == 0)
        let program = dir.path + "/id"
        try GuestRoot.copyExecutable("/usr/bin/id", to: program)
        #expect(chown(program, 0, 0) == 0 && chmod(program, 0o4755) == 0)
        // Outside the agent the bit works (else the check below would prove nothing).
        let control = try runCommand(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", program, "-u"])
        if control.output != "0\n" {
            try Test.cancel("set-user-ID does not take effect in \(dir.path) (nosuid mount?): \(control.output)")
        }
        let agent = try startAgent()
        for (id, profile) in zip(UInt32(1)..., [SeccompProfile?.none, .default, .restricted, .unfiltered]) {
            let confined = try run(agent, ExecRequest(argv: [OSString(program), "-u"], user: "nobody", seccomp: profile), id: id)
            #expect(confined.stdoutText == "65534\n", "\(String(describing: profile)): \(confined.stderrText)")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func restrictedAppliesToOtherUsersToo() throws {
        let agent = try startAgent()
        let t = try run(agent, sh("id -u; " + Self.statusScript) { $0.user = "nobody"; $0.seccomp = .restricted }, id: 1)
        #expect(t.stdoutText.hasSuffix(Self.confined), "\(t.stdoutText)\(t.stderrText)")
        #expect(!t.stdoutText.hasPrefix("0\n"))
    }

    @Test(.timeLimit(.minutes(1)))
    func theAgentOptionMakesRestrictedTheDefaultAndARequestCanSayDefault() throws {
        let agent = try startAgent(arguments: ["--listen", "fd:3", "--seccomp", "restricted"])
        #expect(try run(agent, sh(Self.statusScript), id: 1).stdoutText == Self.confined)
        // chroot(2): restricted refuses it, default leaves it to CAP_SYS_CHROOT.
        let unsaid = try run(agent, sh("chroot / /bin/true"), id: 2)
        #expect(unsaid.exited != .code(0))
        #expect(unsaid.stderrText.contains("Operation not permitted"), "\(unsaid.stderrText)")
        let said = try run(agent, sh("chroot / /bin/true") { $0.seccomp = .default }, id: 3)
        #expect(said.exited == .code(0), "\(said.stderrText)")
    }

    /// `--seccomp none`: no filter unless a request names one, and the agent says so.
    @Test(.timeLimit(.minutes(1)))
    func theAgentOptionNoneDropsTheFilterWithAWarning() throws {
        let dir = try TemporaryDirectory("tether-none")
        let log = dir.path + "/agent.log"
        let agent = try AgentProcess(arguments: ["--listen", "fd:3", "--seccomp", "none"], stderrPath: log)
        try agent.handshake()
        #expect(try run(agent, sh(Self.statusScript), id: 1).stdoutText == Self.unfiltered)
        #expect(try run(agent, sh(Self.statusScript) { $0.seccomp = .default }, id: 2).stdoutText == Self.confined)
        if getuid() == 0 {
            #expect(try run(agent, sh("grep CapBnd /proc/self/status"), id: 3).stdoutText.contains(Self.defaultSet))
        }
        // A request that asks for none is logged too.
        _ = try run(agent, sh("true") { $0.seccomp = .unfiltered }, id: 4)
        agent.stop()
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(text.contains("--seccomp none"), "\(text)")
        #expect(text.contains("seccomp none requested"), "\(text)")
    }

    /// An agent run as an ordinary user has no capabilities to bound (and cannot lower its
    /// bounding set): its commands still get no_new_privs and the filter.
    @Test(.timeLimit(.minutes(1)))
    func anUnprivilegedAgentStillConfinesItsCommands() throws {
        if getuid() != 0 { try Test.cancel("needs root to start the agent as nobody") }
        let agent = try startAgent(wrapper: ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        let t = try run(agent, sh("id -u; " + Self.statusScript + "; grep CapEff /proc/self/status"), id: 1)
        #expect(t.stdoutText == "65534\n" + Self.confined + "CapEff:\t0000000000000000\n", "\(t.stderrText)")
    }

    /// An agent that holds capabilities outside the default set but cannot drop them from a
    /// child's bounding set (no CAP_SETPCAP) gets a typed spawn failure: the command never runs
    /// with more than it may.
    @Test(.timeLimit(.minutes(1)))
    func aBoundThatCannotBeLoweredIsASpawnFailureNotAnUnconfinedExec() throws {
        if getuid() != 0 { try Test.cancel("needs root: the agent must hold capabilities it cannot drop") }
        let dir = try TemporaryDirectory("tether-nosetpcap")
        let marker = dir.path + "/ran"
        // As root, the agent's permitted set is the bounding set: everything but SETPCAP.
        let agent = try startAgent(wrapper: ["/usr/bin/setpriv", "--bounding-set=-setpcap"])
        let t = try run(agent, sh("touch \(marker)"), id: 1)
        let failed = try #require(t.failed, "the command ran: \(t.stdoutText)\(t.stderrText)")
        #expect(failed.stage == .capabilityBound)
        #expect(failed.errno == EPERM)
        #expect(failed.kind == .other)
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    @Test(.timeLimit(.minutes(1)))
    func anUnknownProfileOnTheCommandLineIsAUsageError() throws {
        let agent = try AgentProcess(arguments: ["--listen", "fd:3", "--seccomp", "strict"], stderrPath: "/dev/null")
        #expect(agent.waitForExit() == 2 << 8)
        #expect(try AgentOptions(parsing: ["--seccomp=restricted"]).seccomp == .restricted)
        #expect(try AgentOptions(parsing: ["--seccomp", "none"]).seccomp == .unfiltered)
        #expect(try AgentOptions(parsing: []).seccomp == .default)
    }

    /// A filter the kernel rejects ends the spawn at stage `seccomp` with the kernel's errno,
    /// as a typed failure, and the program never runs.
    @Test(.timeLimit(.minutes(1)))
    func aFilterTheKernelRejectsIsASeccompStageFailure() throws {
        let dir = try TemporaryDirectory("tether-seccomp-fail")
        let marker = dir.path + "/ran"
        let request = ExecRequest(argv: ["/bin/sh", "-c", OSString("touch \(marker)")])
        let plan = try SpawnPlan(request: request, users: UserDatabase(), baseLimits: [])
        // An empty program: seccomp(2) answers EINVAL.
        var empty = sock_fprog(len: 0, filter: nil)
        // The child's descriptors close when `child` goes out of scope (SharedFD).
        let child = try ChildSpawner.start(plan, request: request, seccompFilter: &empty)
        var report = csys_spawn_report()
        var result: CInt = -EAGAIN
        #expect(eventually { result = csys_spawn_read_report(child.report.raw, &report); return result != -EAGAIN })
        #expect(result == 1)
        let failure = SpawnFailure(stage: SpawnStage(child: report.stage), errno: report.error, program: plan.program)
        #expect(failure.stage == .seccomp)
        #expect(failure.errno == EINVAL)
        #expect(failure.event.kind == .other)
        var status: CInt = 0
        _ = waitpid(child.pid, &status, 0)
        #expect(status == 127 << 8)
        #expect(!FileManager.default.fileExists(atPath: marker))
    }
}

/// The same profiles with the static agent as PID 1 of its own namespaces, where mounting would
/// be harmless to the host.
@Suite(.serialized) struct SeccompPid1Tests {
    /// The root must outlive the agent: dropping it deletes the directory under the guest.
    func boot(_ extra: [String] = []) throws -> (GuestRoot, AgentProcess) {
        try Pid1Tests.requireNamespaces()
        let root = try GuestRoot()
        try FileManager.default.createDirectory(atPath: root.path + "/mnt", withIntermediateDirectories: true)
        let agent = try AgentProcess(command: root.pid1Command(["--listen", "fd:3", "--hostname", "guest"] + extra), stderrPath: root.path + "/.tether/agent.log")
        do { try agent.handshake() } catch {
            throw ClientError("\(error); status \(agent.waitForExit()); agent log:\n\(root.read(".tether/agent.log") ?? "-")")
        }
        return (root, agent)
    }

    func stop(_ agent: AgentProcess) throws {
        try agent.client.send(Shutdown(graceMs: 200), id: 0)
        #expect(agent.client.waitForClose())
        #expect(agent.waitForExit() == 0)
    }

    static let mountScript = "mount -t tmpfs none /mnt && grep -c ' /mnt tmpfs' /proc/mounts"

    /// Even as root of its own mount namespace, no command mounts: `default` and `restricted`
    /// refuse mount(2), and without a filter CAP_SYS_ADMIN is outside the bounding set.
    @Test(.timeLimit(.minutes(1)))
    func noProfileMounts() throws {
        let (root, agent) = try boot()
        for (id, profile) in zip(UInt32(1)..., [SeccompProfile?.none, .default, .restricted, .unfiltered]) {
            let refused = try run(agent, sh(Self.mountScript) { $0.seccomp = profile }, id: id)
            #expect(refused.exited == .code(1), "\(String(describing: profile)): \(String(describing: refused.failed)) \(String(describing: refused.error))")
            #expect(refused.stderrText.contains("permission denied"), "\(String(describing: profile)): \(refused.stderrText)")
        }
        try stop(agent)
        withExtendedLifetime(root) {}
    }

    @Test(.timeLimit(.minutes(1)))
    func restrictedByOptionUnlessTheRequestSaysDefault() throws {
        let (root, agent) = try boot(["--seccomp", "restricted"])
        let refused = try run(agent, sh("chroot / /bin/true"), id: 1)
        #expect(refused.exited != .code(0))
        #expect(refused.stderrText.contains("not permitted"), "\(refused.stderrText)")
        let allowed = try run(agent, sh("chroot / /bin/true") { $0.seccomp = .default }, id: 2)
        #expect(allowed.exited == .code(0), "\(allowed.stderrText)")
        try stop(agent)
        withExtendedLifetime(root) {}
    }

    /// Once it serves, the agent (PID 1) keeps the guest set and CAP_SYS_RESOURCE only (of
    /// what it was given: this machine may have withheld some), and is not dumpable: what it
    /// holds open (/proc/1/fd/N, the "open a host file through the agent" path) and its
    /// environment are out of a command's reach, though the command is root too.
    @Test(.timeLimit(.minutes(1)))
    func theServingAgentKeepsOnlyWhatItNeeds() throws {
        #expect(GuestCapabilities.agentKeeps(role: .namespaceInit) == 0xa904_25fb)
        let (root, agent) = try boot()
        let kept = GuestCapabilities.agentKeeps(role: .namespaceInit) & GuestCapabilities.currentBoundingSet()
        let hex = String(kept, radix: 16)
        let padded = String(repeating: "0", count: 16 - hex.count) + hex
        let status = try run(agent, sh("grep -E '^Cap(Prm|Eff|Bnd):' /proc/1/status | tr '\\t' ' '"), id: 1)
        #expect(status.stdoutText == "CapPrm: \(padded)\nCapEff: \(padded)\nCapBnd: \(padded)\n", "\(status.stderrText)")
        let fd = try run(agent, sh("readlink /proc/1/fd/0 || echo refused; cat /proc/1/environ"), id: 2)
        #expect(fd.stdoutText == "refused\n", "\(fd.stdoutText)")
        #expect(fd.stderrText.contains("ermission denied"), "\(fd.stderrText)")
        // Still a working agent: commands as other users, signals.
        #expect(try run(agent, ExecRequest(argv: ["/bin/id", "-u"], user: "sandbox"), id: 3).stdoutText == "1000\n")
        try stop(agent)
        withExtendedLifetime(root) {}
    }
}
