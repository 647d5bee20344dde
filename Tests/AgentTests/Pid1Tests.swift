#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherPosix
import TetherProtocol

/// The agent as real PID 1 of new PID, mount, UTS and IPC namespaces (`unshare`), chrooted
/// into a busybox root: the boot mounts, /dev, the host name, reaping as init, shutdown,
/// boot errors, and the hand-off to an init.
@Suite(.serialized) struct Pid1Tests {
    static func requireNamespaces() throws {
        if getuid() != 0 { try Test.cancel("PID 1 tests need root (mount and PID namespaces)") }
        if !FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") { try Test.cancel("unshare (util-linux) is missing") }
        if !FileManager.default.isExecutableFile(atPath: "/bin/busybox") { try Test.cancel("busybox-static is missing") }
        if GuestRoot.staticAgent == nil {
            try Test.cancel("no static agent: run scripts/build-agent.sh and set TETHER_AGENT_STATIC (or scripts/test.sh)")
        }
    }

    func boot(_ root: GuestRoot, _ arguments: [String] = ["--listen", "fd:3", "--hostname", "guest"]) throws -> (AgentProcess, Hello) {
        let agent = try AgentProcess(command: root.pid1Command(arguments), stderrPath: root.path + "/.tether/agent.log")
        do {
            return (agent, try agent.handshake())
        } catch {
            throw ClientError("\(error); status \(agent.waitForExit()); agent log:\n\(root.read(".tether/agent.log") ?? "-")"
                              + "\nboot-error.json: \(root.read(".tether/boot-error.json") ?? "-")")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func bootsAsPID1WithItsOwnDevProcAndHostname() throws {
        try Self.requireNamespaces()
        let root = try GuestRoot()
        let (agent, hello) = try boot(root)
        #expect(hello.pid == 1)
        #expect(hello.name == "guest")

        let mounts = try run(agent, ExecRequest(argv: ["/bin/cat", "/proc/mounts"]), id: 1).stdoutText
        for expected in ["proc /proc proc", "sysfs /sys sysfs", "tmpfs /dev tmpfs", "devpts /dev/pts devpts",
                         "tmpfs /dev/shm tmpfs", "tmpfs /tmp tmpfs", "tmpfs /run tmpfs"] {
            #expect(mounts.contains(expected), "\(expected) missing from\n\(mounts)")
        }
        #expect(mounts.contains("ptmxmode=666"))
        let dev = try run(agent, ExecRequest(argv: ["/bin/ls", "/dev"]), id: 2).stdoutText.split(separator: "\n").map(String.init)
        #expect(Set(dev) == ["console", "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"])
        #expect(try run(agent, ExecRequest(argv: ["/bin/hostname"]), id: 3).stdoutText == "guest\n")
        let id = try run(agent, ExecRequest(argv: ["/bin/id"], user: "sandbox"), id: 4)
        // The kernel sorts the supplementary groups (setgroups(2)); busybox id lists them as stored.
        #expect(id.stdoutText == "uid=1000(sandbox) gid=1000(sandbox) groups=10(wheel),1000(sandbox)\n", "\(id.stderrText) \(String(describing: id.failed))")
        let env = try run(agent, ExecRequest(argv: ["/bin/sh", "-c", "echo $HOME $USER; cat /proc/1/cmdline | tr '\\0' ' '"], user: "sandbox"), id: 5)
        #expect(env.stdoutText == "/home/sandbox sandbox\n/sbin/tether-agent --listen fd:3 --hostname guest ")

        // A pty from the agent's own devpts instance.
        let tty = try run(agent, ExecRequest(argv: ["/bin/tty"], tty: TerminalSize(rows: 24, cols: 80)), id: 6)
        #expect(tty.stdoutText.hasPrefix("/dev/pts/"))

        try agent.client.send(Shutdown(graceMs: 1000), id: 0)
        #expect(agent.client.waitForClose())
        #expect(agent.waitForExit() == 0)
    }

    /// A kernel starts init with no /proc; here the root has no /proc directory at all. The
    /// static agent's early-init constructor creates and mounts it before the Swift runtime
    /// starts, and the boot then finds it in place instead of stacking a second procfs.
    @Test(.timeLimit(.minutes(1)))
    func startsWithoutProcAndMountsItOnce() throws {
        try Self.requireNamespaces()
        let root = try GuestRoot()
        try FileManager.default.removeItem(atPath: root.path + "/proc")
        let (agent, hello) = try boot(root)
        #expect(hello.pid == 1)
        let mounts = try run(agent, ExecRequest(argv: ["/bin/cat", "/proc/mounts"]), id: 1).stdoutText
        let procMounts = mounts.split(separator: "\n").filter { $0.hasPrefix("proc /proc ") }
        #expect(procMounts.count == 1, "\(mounts)")
        #expect(procMounts.first?.contains("nosuid,nodev,noexec") == true, "\(mounts)")
        let cmdline = try run(agent, sh("cat /proc/1/cmdline | tr '\\0' ' '"), id: 2).stdoutText
        #expect(cmdline == "/sbin/tether-agent --listen fd:3 --hostname guest ")
        try agent.client.send(Shutdown(graceMs: 200), id: 0)
        #expect(agent.client.waitForClose())
        #expect(agent.waitForExit() == 0)
        #expect(root.read(".tether/boot-error.json") == nil)
    }

    /// The exec core of the subreaper tests, once more with the agent as PID 1 (its own /dev,
    /// signal handling as init, reaping everything): exit codes, a death by signal, a failure
    /// kind, output and stdin byte-exact, a signal to a whole process group.
    @Test(.timeLimit(.minutes(1)))
    func theExecCoreHoldsAsPID1() throws {
        try Self.requireNamespaces()
        let root = try GuestRoot()
        let (agent, _) = try boot(root)

        let code = try run(agent, sh("echo out; echo err >&2; exit 7"), id: 1)
        #expect(code.stdoutText == "out\n")
        #expect(code.stderrText == "err\n")
        #expect(code.exited == .code(7))
        #expect(try run(agent, sh("kill -TERM $$"), id: 2).exited == .signal(SIGTERM))
        let missing = try run(agent, ExecRequest(argv: ["/no/such/program"]), id: 3)
        #expect(missing.failed?.kind == .notFound)
        #expect(missing.failed?.errno == ENOENT)
        #expect(missing.failed?.stage == .exec)

        // 8 MiB out (through the output window and acks), every byte accounted for.
        let out = try run(agent, sh("head -c 8388608 /dev/zero | tr '\\0' x"), id: 4)
        #expect(out.stdout.count == 8 << 20)
        #expect(out.stdout.allSatisfy { $0 == UInt8(ascii: "x") })
        #expect(out.exited == .code(0))

        // Stdin through a pipe, checked by the guest's own wc.
        try agent.client.exec(ExecRequest(argv: ["/bin/wc", "-c"], stdin: .pipe), id: 5)
        try agent.client.sendData(id: 5, Array(repeating: UInt8(ascii: "y"), count: 100_000))
        try agent.client.sendData(id: 5, [], flags: .end)
        let counted = try agent.client.collect(id: 5)
        #expect(counted.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines) == "100000")

        // One signal ends the whole group: no sleep is left in the guest afterwards.
        try agent.client.exec(sh("sleep 1000 & sleep 1000 & echo ready; wait"), id: 6)
        while try agent.client.next(id: 6).kind != .stdout {}
        try agent.client.send(SignalRequest(number: SIGTERM), id: 6)
        #expect(try agent.client.collect(id: 6).exited == .signal(SIGTERM))
        var probe: UInt32 = 100
        #expect(eventually {
            probe += 1
            return (try? run(agent, sh("pgrep -x sleep || true"), id: probe).stdoutText) == ""
        })

        try agent.client.send(Shutdown(graceMs: 200), id: 0)
        #expect(agent.client.waitForClose())
        #expect(agent.waitForExit() == 0)
    }

    @Test(.timeLimit(.minutes(1)))
    func asInitItReapsOrphansAndShutdownKillsEverything() throws {
        try Self.requireNamespaces()
        let root = try GuestRoot()
        let (agent, _) = try boot(root)
        // Orphans of every session end up with PID 1, which must reap them.
        let t = try run(agent, sh("for i in 1 2 3 4 5 6; do (sleep 0.05 &); done; (sleep 1000 &); echo ok"), id: 1)
        #expect(t.stdoutText == "ok\n")
        var id: UInt32 = 10
        let settled = eventually {
            id += 1
            // The zombies would show as state Z among PID 1's children.
            let states = (try? run(agent, sh("cat /proc/[0-9]*/stat 2>/dev/null | awk '$4 == 1 {print $3}' | sort | uniq -c"), id: id).stdoutText) ?? "?"
            return !states.contains("Z") && !states.contains("?") && states.contains("S")
        }
        #expect(settled)
        // Shutdown ends the orphaned `sleep 1000` too: the namespace is gone once the agent exits.
        try agent.client.send(Shutdown(graceMs: 200), id: 0)
        #expect(agent.client.waitForClose())
        #expect(agent.waitForExit() == 0)
    }

    @Test(.timeLimit(.minutes(1)))
    func listensOnAUnixSocketInsideTheRoot() throws {
        try Self.requireNamespaces()
        let root = try GuestRoot()
        let socket = root.path + "/.tether/agent.sock"
        let agent = try AgentProcess(command: root.pid1Command(["--listen", "unix:/.tether/agent.sock"]),
                                     stderrPath: root.path + "/.tether/agent.log")
        // The agent binds (the file appears) before it listens: until then connect is refused.
        var connected: CInt?
        #expect(eventually { connected = try? Socket.connect(.unix(path: socket)).release(); return connected != nil })
        let client = FrameClient(adopting: try #require(connected))
        #expect(try client.expectHello().pid == 1)
        try client.exec(sh("echo inside"), id: 1)
        #expect(try client.collect(id: 1).stdoutText == "inside\n")
        try client.send(Shutdown(graceMs: 100), id: 0)
        #expect(client.waitForClose())
        #expect(agent.waitForExit() == 0)
    }

    @Test(.timeLimit(.minutes(1)))
    func aBootFailureIsWrittenWhereTheHostCanReadIt() throws {
        try Self.requireNamespaces()
        let root = try GuestRoot()
        try FileManager.default.removeItem(atPath: root.path + "/proc")
        try root.directory.write("proc", "not a directory\n")
        let agent = try AgentProcess(command: root.pid1Command(["--listen", "fd:3"]), stderrPath: root.path + "/.tether/agent.log")
        let status = agent.waitForExit()
        #expect(status != 0)
        let report = try #require(root.read(".tether/boot-error.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(report.utf8)) as? [String: Any])
        #expect(json["stage"] as? String == "mount /proc")
        #expect(json["errno"] as? Int == Int(ENOTDIR))
        #expect((json["message"] as? String)?.isEmpty == false)
        #expect(root.read(".tether/agent.log")?.contains("tether-agent: boot failed:") == true)
    }

    @Test(.timeLimit(.minutes(1)))
    func handsPID1ToAnInitAndAsksItToPowerOff() throws {
        try Self.requireNamespaces()
        let root = try GuestRoot()
        // A stand-in init: records what it was asked, and ends (which ends the namespace).
        try root.directory.write("sbin/fake-init", """
            #!/bin/sh
            trap 'echo TERM > /.tether/init-signal; exit 0' TERM
            trap 'echo USR2 > /.tether/init-signal; exit 0' USR2
            echo $$ > /.tether/init-pid
            while :; do sleep 0.05; done

            """, mode: 0o755)
        let (agent, hello) = try boot(root, ["--listen", "fd:3", "--init", "/sbin/fake-init"])
        #expect(hello.pid != 1)
        // The agent's child says hello while PID 1 may still be on its way to exec the init.
        var cmdline = "", id: UInt32 = 100
        #expect(eventually {
            id += 1
            cmdline = (try? run(agent, sh("cat /proc/1/cmdline | tr '\\0' ' '"), id: id).stdoutText) ?? ""
            return cmdline.hasPrefix("/bin/sh /sbin/fake-init")
        }, "\(cmdline)")
        #expect(eventually { root.read(".tether/init-pid") == "1\n" })
        // Exec still works, orphans go to the agent (a subreaper), not to the init.
        #expect(try run(agent, sh("(sleep 0.05 &); echo ok"), id: 2).stdoutText == "ok\n")

        try agent.client.send(Shutdown(graceMs: 200), id: 0)
        #expect(agent.client.waitForClose())
        #expect(agent.waitForExit() == 0)
        #expect(root.read(".tether/init-signal") == "TERM\n")
    }

    @Test(.timeLimit(.minutes(1)))
    func autoFindsBusyboxInitAndPowersItOffWithSIGUSR2() throws {
        try Self.requireNamespaces()
        let root = try GuestRoot()
        // busybox init with an inittab that only runs a marker at start and at shutdown.
        try root.directory.write("etc/inittab", """
            ::sysinit:/bin/sh -c 'echo started > /.tether/busybox-init'
            ::shutdown:/bin/sh -c 'echo shutdown >> /.tether/busybox-init'

            """)
        let (agent, hello) = try boot(root, ["--listen", "fd:3", "--init", "auto"])
        #expect(hello.pid != 1)
        #expect(eventually { root.read(".tether/busybox-init") == "started\n" })
        let comm = try run(agent, ExecRequest(argv: ["/bin/cat", "/proc/1/comm"]), id: 1).stdoutText
        #expect(comm == "init\n")
        try agent.client.send(Shutdown(graceMs: 200), id: 0)
        #expect(agent.client.waitForClose())
        let status = agent.waitForExit()
        // busybox init runs its shutdown actions, then reboot(RB_POWER_OFF): in a PID
        // namespace that ends the namespace's init as if by SIGINT, which unshare passes on.
        #expect(root.read(".tether/busybox-init") == "started\nshutdown\n")
        // unshare re-raises its child's fatal signal on itself: killed by SIGINT, no core.
        #expect(status & 0xff == SIGINT, "wait status \(status)")
    }
}
