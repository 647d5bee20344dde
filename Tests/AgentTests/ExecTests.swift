#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherProtocol

/// Starts an agent (the debug build, a child subreaper of the test) and shakes hands.
func startAgent(wrapper: [String] = [], arguments: [String]? = nil) throws -> AgentProcess {
    let agent = try AgentProcess(wrapper: wrapper, arguments: arguments)
    try agent.handshake()
    return agent
}

/// Runs one request to its end on a fresh id.
func run(_ agent: AgentProcess, _ request: ExecRequest, id: UInt32 = 1) throws -> Transcript {
    try agent.client.exec(request, id: id)
    return try agent.client.collect(id: id)
}

func sh(_ script: String, _ configure: (inout ExecRequest) -> Void = { _ in }) -> ExecRequest {
    var request = ExecRequest(argv: ["/bin/sh", "-c", OSString(script)])
    configure(&request)
    return request
}

/// Exec end to end with the real agent binary as a child subreaper over a socketpair.
@Suite struct ExecTests {
    @Test(.timeLimit(.minutes(1)))
    func helloComesFirstWithTimingsAndCapabilities() throws {
        let agent = try AgentProcess()
        let hello = try agent.handshake()
        #expect(hello.role == .agent)
        #expect(hello.version == 1)
        #expect(hello.capabilities.contains("pty/1") && hello.capabilities.allSatisfy { $0.split(separator: "/").count == 2 })
        #expect(hello.agentVersion != nil)
        let boot = try #require(hello.bootNs)
        let ready = try #require(hello.readyNs)
        #expect(boot > 0 && ready >= boot)
        #expect(hello.pid == agent.pid)
    }

    @Test(.timeLimit(.minutes(1)))
    func outputThenExitedThenDone() throws {
        let agent = try startAgent()
        let t = try run(agent, sh("echo out; echo err >&2; exit 7"))
        #expect(t.events == [.started, .exited, .done])
        #expect(t.stdoutText == "out\n")
        #expect(t.stderrText == "err\n")
        #expect(t.exited == .code(7))
        #expect(t.endKind == .done)
        #expect(t.started?.pid ?? 0 > 0)
    }

    @Test(.timeLimit(.minutes(1)), arguments: [0, 1, 42, 255])
    func exitCodesPassThrough(code: Int32) throws {
        let agent = try startAgent()
        #expect(try run(agent, sh("exit \(code)")).exited == .code(code))
    }

    @Test(.timeLimit(.minutes(1)), arguments: [SIGTERM, SIGKILL, SIGINT, SIGUSR1])
    func deathBySignalIsReportedAsTheSignal(signal: Int32) throws {
        let agent = try startAgent()
        let t = try run(agent, sh("kill -\(signal) $$"))
        #expect(t.exited == .signal(signal))
    }

    @Test(.timeLimit(.minutes(1)))
    func coreDumpIsFlagged() throws {
        let pattern = (try? String(contentsOfFile: "/proc/sys/kernel/core_pattern", encoding: .utf8)) ?? ""
        if pattern.hasPrefix("|") { try Test.cancel("core_pattern pipes cores to a helper (\(pattern)); no core file to flag") }
        let dir = try TemporaryDirectory()
        let agent = try startAgent()
        let t = try run(agent, sh("kill -SEGV $$") {
            $0.cwd = OSString(dir.path)
            $0.rlimits = ["core": ResourceLimit(soft: nil, hard: nil)]
        })
        #expect(t.exited == .signal(SIGSEGV, coreDumped: true))
        let noCore = try run(agent, sh("kill -SEGV $$") { $0.rlimits = ["core": ResourceLimit(soft: 0, hard: 0)] }, id: 2)
        #expect(noCore.exited == .signal(SIGSEGV, coreDumped: false))
    }

    @Test(.timeLimit(.minutes(1)))
    func environmentIsDefaultsMergedWithTheRequest() throws {
        let agent = try startAgent()
        let t = try run(agent, ExecRequest(argv: ["/usr/bin/env"], env: ["FOO": "bar", "TERM": "vt100"]))
        let lines = Set(t.stdoutText.split(separator: "\n").map(String.init))
        #expect(lines.contains("FOO=bar"))
        #expect(lines.contains("TERM=vt100"))
        #expect(lines.contains("USER=root"))
        #expect(lines.contains("HOME=/root"))
        #expect(lines.contains { $0.hasPrefix("PATH=") && $0.contains("/usr/bin") })
        // Nothing of the agent's own environment leaks through.
        #expect(lines.count == 5)
    }

    @Test(.timeLimit(.minutes(1)))
    func workingDirectoryUserAndGroups() throws {
        let dir = try TemporaryDirectory()
        // mkdtemp makes it 0700: nobody must be able to enter it (chdir runs as the user).
        #expect(chmod(dir.path, 0o755) == 0)
        let agent = try startAgent()
        let t = try run(agent, sh("pwd; id -u; id -g; id -G; echo $HOME $USER") {
            $0.cwd = OSString(dir.path)
            $0.user = "nobody"
        })
        #expect(t.stdoutText == "\(dir.path)\n65534\n65534\n65534\n/nonexistent nobody\n", "\(t.stderrText)")

        let numeric = try run(agent, sh("id -u; id -g; id -G; echo $HOME $USER") { $0.user = "4321:99" }, id: 2)
        #expect(numeric.stdoutText == "4321\n99\n99\n/ 4321\n")
    }

    @Test(.timeLimit(.minutes(1)))
    func programsAreLookedUpInTheChildsPath() throws {
        let dir = try TemporaryDirectory()
        try dir.write("bin/hello-tether", "#!/bin/sh\necho found \"$@\"\n", mode: 0o755)
        try dir.write("noexec/hello-tether", "#!/bin/sh\necho wrong\n", mode: 0o644)
        let agent = try startAgent()
        let found = try run(agent, ExecRequest(argv: ["hello-tether", "x"], env: ["PATH": OSString("\(dir.path)/noexec:\(dir.path)/bin")]))
        #expect(found.stdoutText == "found x\n")
        // execvp's rule: EACCES on the way is remembered, and reported when nothing else is found.
        let denied = try run(agent, ExecRequest(argv: ["hello-tether"], env: ["PATH": OSString("\(dir.path)/noexec:/nonexistent")]), id: 2)
        #expect(denied.failed?.kind == .permissionDenied)
        #expect(denied.failed?.errno == EACCES)
        let missing = try run(agent, ExecRequest(argv: ["hello-tether"], env: ["PATH": "/nonexistent:/usr/bin"]), id: 3)
        #expect(missing.failed?.kind == .notFound)
        #expect(missing.failed?.errno == ENOENT)
    }

    @Test(.timeLimit(.minutes(1)))
    func stdinNoneReadsEndOfFile() throws {
        let agent = try startAgent()
        let t = try run(agent, ExecRequest(argv: ["/bin/cat"]))
        #expect(t.exited == .code(0))
        #expect(t.stdout.isEmpty)
    }

    @Test(.timeLimit(.minutes(1)))
    func resourceLimitsAreAppliedAndTheDescriptorLimitIsTheUsualOne() throws {
        let agent = try startAgent()
        let t = try run(agent, sh("ulimit -n; ulimit -c") {
            $0.rlimits = ["nofile": ResourceLimit(soft: 64, hard: 128), "core": ResourceLimit(soft: nil, hard: nil)]
        })
        #expect(t.stdoutText == "64\nunlimited\n")
        // Without a request the child gets the agent's original soft limit back.
        var mine = rlimit()
        getrlimit(CInt(RLIMIT_NOFILE.rawValue), &mine)
        let plain = try run(agent, sh("ulimit -n"), id: 2)
        #expect(plain.stdoutText == "\(mine.rlim_cur)\n")
    }

    @Test(.timeLimit(.minutes(1)))
    func argumentsThatAreNotUTF8PassThrough() throws {
        let agent = try startAgent()
        let bytes: [UInt8] = [0x66, 0xFF, 0xFE, 0x6F]
        let t = try run(agent, ExecRequest(argv: ["/usr/bin/printf", "%s", OSString(bytes: bytes)]))
        #expect(t.stdout == bytes)
    }

    @Test(.timeLimit(.minutes(1)))
    func timeoutSendsTermThenKillAfterTheGrace() throws {
        let agent = try startAgent()
        let polite = try run(agent, ExecRequest(argv: ["/bin/sleep", "100"], timeoutMs: 100))
        #expect(polite.exited == Exited(signal: SIGTERM, timedOut: true))
        let stubborn = try run(agent, sh("trap '' TERM; echo ready; while :; do sleep 0.05; done") {
            $0.timeoutMs = 100
            $0.killGraceMs = 200
        }, id: 2)
        #expect(stubborn.exited == Exited(signal: SIGKILL, timedOut: true))
        #expect(stubborn.stdoutText == "ready\n")
        // A program that ends on its own before its timeout did not time out.
        let quick = try run(agent, ExecRequest(argv: ["/bin/true"], timeoutMs: 60_000), id: 3)
        #expect(quick.exited == .code(0) && quick.exited?.timedOut == false)
    }

    @Test(.timeLimit(.minutes(1)))
    func descendantsOutputIsDrainedAfterExitedForAtMostDrainMs() throws {
        let agent = try startAgent()
        // The leader exits at once; its child writes later while holding the pipe.
        let drained = try run(agent, sh("(sleep 0.3; echo late) & echo early") { $0.drainMs = 20_000 })
        #expect(drained.events == [.started, .exited, .done])
        #expect(drained.stdoutText == "early\nlate\n")
        #expect(drained.bytesAfterExited == 5)
        // A descendant that never lets go: done comes anyway once drainMs is over.
        let held = try run(agent, sh("sleep 30 & echo early") { $0.drainMs = 50 }, id: 2)
        #expect(held.events == [.started, .exited, .done])
        #expect(held.stdoutText == "early\n")
    }

    @Test(.timeLimit(.minutes(1)))
    func aSignalReachesTheWholeProcessGroup() throws {
        let agent = try startAgent()
        try agent.client.exec(sh("sleep 1000 & echo $!; sleep 1000 & echo $!; wait"), id: 1)
        var pids: [Int32] = []
        var buffer = ""
        while pids.count < 2 {
            let frame = try agent.client.next(id: 1)
            if frame.kind == .stdout { buffer += String(decoding: frame.payload, as: UTF8.self) }
            pids = buffer.split(separator: "\n").compactMap { Int32($0) }
        }
        try agent.client.send(SignalRequest(number: SIGTERM), id: 1)
        let t = try agent.client.collect(id: 1)
        #expect(t.exited == .signal(SIGTERM))
        for pid in pids { #expect(eventually { !processIsAlive(pid) }, "background sleep \(pid) survived") }

        try agent.client.exec(sh("trap '' TERM; echo ready; sleep 1000"), id: 2)
        _ = try agent.client.next(id: 2)   // started
        _ = try agent.client.next(id: 2)   // ready
        try agent.client.send(KillRequest(), id: 2)
        #expect(try agent.client.collect(id: 2).exited == .signal(SIGKILL))
    }

    @Test(.timeLimit(.minutes(1)))
    func orphansAreReapedAndNoZombieIsLeft() throws {
        let agent = try startAgent()
        // Each grandchild is orphaned at once and reparented to the agent (a subreaper).
        let t = try run(agent, sh("for i in 1 2 3 4 5; do (sleep 0.1 &) ; done; echo spawned"))
        #expect(t.stdoutText == "spawned\n")
        #expect(eventually { childProcesses(of: agent.pid).isEmpty }, "\(childProcesses(of: agent.pid))")
    }
}
