#if canImport(Glibc)
import Glibc
#endif
import Testing
import TestSupport
import TetherProtocol

/// Exec end to end with the real agent binary as a child subreaper over a socketpair.
@Suite struct ExecTests {
    @Test(.timeLimit(.minutes(1)))
    func helloComesFirstWithTimingsAndCapabilities() throws {
        let agent = try AgentProcess()
        let hello = try agent.handshake()
        #expect(hello.role == .agent)
        #expect(hello.version == 1)
        #expect(hello.capabilities.contains("pty"))
        #expect(hello.agentVersion != nil)
        let boot = try #require(hello.bootNs)
        let ready = try #require(hello.readyNs)
        #expect(boot > 0 && ready >= boot)
        #expect(hello.pid == agent.pid)
    }

    @Test(.timeLimit(.minutes(1)))
    func runsAProgramAndReportsOutputThenExitThenDone() throws {
        let agent = try AgentProcess()
        try agent.handshake()
        try agent.client.exec(ExecRequest(argv: ["/bin/sh", "-c", "echo out; echo err >&2; exit 7"]), id: 1)
        let t = try agent.client.collect(id: 1)
        #expect(t.events == [.started, .exited, .done])
        #expect(t.stdoutText == "out\n")
        #expect(t.stderrText == "err\n")
        #expect(t.exited == .code(7))
        #expect(t.endKind == .done)
    }
}
