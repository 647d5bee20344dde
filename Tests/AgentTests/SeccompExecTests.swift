#if canImport(Glibc)
import Glibc
#endif
import CSys
import Foundation
import Testing
import TestSupport
@testable import TetherAgent
import TetherProtocol

/// The `seccomp` field of an exec and the agent's `--seccomp` default (issue 7, guest side):
/// under `restricted` privileged calls fail with EPERM and ordinary programs still work; under
/// `default` nothing changes.
@Suite struct SeccompExecTests {
    static let python = "/usr/bin/python3"

    static func restricted(_ script: String) -> ExecRequest { sh(script) { $0.seccomp = .restricted } }

    /// `NoNewPrivs` and `Seccomp` (0 none, 2 filter) as the child's /proc/self/status shows them.
    static let statusScript = "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr '\\t' ' '"

    /// Whether this kernel lets root create a user namespace at all (else the unshare checks
    /// would prove nothing).
    static func requireUserNamespaces(_ agent: AgentProcess) throws {
        let probe = try run(agent, sh("unshare -U true") { $0.seccomp = .default }, id: 999)
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
        #expect(try agent.handshake().capabilities.contains("seccomp"))
    }

    @Test(.timeLimit(.minutes(1)))
    func restrictedSetsNoNewPrivsAndAFilterAndDefaultSetsNeither() throws {
        let agent = try startAgent()
        #expect(try run(agent, Self.restricted(Self.statusScript), id: 1).stdoutText == "NoNewPrivs: 1\nSeccomp: 2\n")
        #expect(try run(agent, sh(Self.statusScript), id: 2).stdoutText == "NoNewPrivs: 0\nSeccomp: 0\n")
        #expect(try run(agent, sh(Self.statusScript) { $0.seccomp = .default }, id: 3).stdoutText == "NoNewPrivs: 0\nSeccomp: 0\n")
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

    /// no_new_privs: a set-user-ID root program run by another user does not become root.
    @Test(.timeLimit(.minutes(1)))
    func restrictedRunsSetuidProgramsWithoutTheirPrivilege() throws {
        let dir = try TemporaryDirectory("tether-suid")
        #expect(chmod(dir.path, 0o755) == 0)
        let program = dir.path + "/id"
        try GuestRoot.copyExecutable("/usr/bin/id", to: program)
        #expect(chown(program, 0, 0) == 0 && chmod(program, 0o4755) == 0)
        let agent = try startAgent()
        let control = try run(agent, ExecRequest(argv: [OSString(program), "-u"], user: "nobody"), id: 1)
        if control.stdoutText != "0\n" {
            try Test.cancel("set-user-ID does not take effect in \(dir.path) (nosuid mount?): \(control.stdoutText)\(control.stderrText)")
        }
        let confined = try run(agent, ExecRequest(argv: [OSString(program), "-u"], user: "nobody", seccomp: .restricted), id: 2)
        #expect(confined.stdoutText == "65534\n", "\(confined.stderrText)")
    }

    @Test(.timeLimit(.minutes(1)))
    func restrictedAppliesToOtherUsersToo() throws {
        let agent = try startAgent()
        let t = try run(agent, sh("id -u; " + Self.statusScript) { $0.user = "nobody"; $0.seccomp = .restricted }, id: 1)
        #expect(t.stdoutText.hasSuffix("NoNewPrivs: 1\nSeccomp: 2\n"), "\(t.stdoutText)\(t.stderrText)")
        #expect(!t.stdoutText.hasPrefix("0\n"))
    }

    @Test(.timeLimit(.minutes(1)))
    func theAgentOptionMakesRestrictedTheDefaultAndARequestCanSayDefault() throws {
        let agent = try startAgent(arguments: ["--listen", "fd:3", "--seccomp", "restricted"])
        #expect(try run(agent, sh(Self.statusScript), id: 1).stdoutText == "NoNewPrivs: 1\nSeccomp: 2\n")
        #expect(try run(agent, sh(Self.statusScript) { $0.seccomp = .default }, id: 2).stdoutText == "NoNewPrivs: 0\nSeccomp: 0\n")
        try Self.requireUserNamespaces(agent)
        let unsaid = try run(agent, sh("unshare -U true"), id: 3)
        #expect(unsaid.exited == .code(1))
        #expect(unsaid.stderrText.contains("Operation not permitted"), "\(unsaid.stderrText)")
        #expect(try run(agent, sh("unshare -U true") { $0.seccomp = .default }, id: 4).exited == .code(0))
    }

    @Test(.timeLimit(.minutes(1)))
    func anUnknownProfileOnTheCommandLineIsAUsageError() throws {
        let agent = try AgentProcess(arguments: ["--listen", "fd:3", "--seccomp", "strict"], stderrPath: "/dev/null")
        #expect(agent.waitForExit() == 2 << 8)
        #expect(try AgentOptions(parsing: ["--seccomp=restricted"]).seccomp == .restricted)
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
        let child = try ChildSpawner.start(plan, request: request, seccompFilter: &empty)
        defer {
            for fd in [child.report, child.stdout] + [child.stdin, child.stderr].compactMap({ $0 }) { _ = close(fd) }
        }
        var report = csys_spawn_report()
        var result: CInt = -EAGAIN
        #expect(eventually { result = csys_spawn_read_report(child.report, &report); return result != -EAGAIN })
        #expect(result == 1)
        let failure = SpawnFailure(stage: String(cString: csys_spawn_stage_name(report.stage)), errno: report.error, program: plan.program)
        #expect(failure.stage == "seccomp")
        #expect(failure.errno == EINVAL)
        #expect(failure.event.kind == .other)
        var status: CInt = 0
        _ = waitpid(child.pid, &status, 0)
        #expect(status == 127 << 8)
        #expect(!FileManager.default.fileExists(atPath: marker))
    }
}

/// The same profiles with the static agent as PID 1 of its own namespaces, where mounting is
/// harmless to the host: the default profile really changes nothing.
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

    @Test(.timeLimit(.minutes(1)))
    func defaultMountsAndRestrictedDoesNot() throws {
        let (root, agent) = try boot()
        let refused = try run(agent, sh(Self.mountScript) { $0.seccomp = .restricted }, id: 1)
        #expect(refused.exited == .code(1))
        #expect(refused.stderrText.contains("permission denied"), "\(refused.stderrText)")
        let allowed = try run(agent, sh(Self.mountScript), id: 2)
        #expect(allowed.stdoutText == "1\n", "\(allowed.stderrText)")
        try stop(agent)
        withExtendedLifetime(root) {}
    }

    @Test(.timeLimit(.minutes(1)))
    func restrictedByOptionUnlessTheRequestSaysDefault() throws {
        let (root, agent) = try boot(["--seccomp", "restricted"])
        let refused = try run(agent, sh(Self.mountScript), id: 1)
        #expect(refused.exited == .code(1))
        #expect(refused.stderrText.contains("permission denied"), "\(refused.stderrText)")
        let unshare = try run(agent, sh("unshare -U true"), id: 2)
        #expect(unshare.exited != .code(0))
        #expect(unshare.stderrText.contains("not permitted"), "\(unshare.stderrText)")
        let allowed = try run(agent, sh(Self.mountScript) { $0.seccomp = .default }, id: 3)
        #expect(allowed.stdoutText == "1\n", "\(allowed.stderrText)")
        try stop(agent)
        withExtendedLifetime(root) {}
    }
}
