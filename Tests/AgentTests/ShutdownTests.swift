#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherProtocol

/// `shutdown` and SIGTERM: TERM every session's group, wait the grace, KILL, exit.
@Suite struct ShutdownTests {
    @Test(.timeLimit(.minutes(1)))
    func shutdownTermsThenKillsAfterTheGraceRefusesNewWorkAndExits() throws {
        let agent = try startAgent()
        let client = agent.client
        try client.exec(sh("trap 'echo bye; exit 3' TERM; echo ready; while :; do sleep 0.02; done"), id: 1)
        try client.exec(sh("trap '' TERM; echo ready; while :; do sleep 0.02; done"), id: 2)
        try client.exec(ExecRequest(argv: ["/bin/sleep", "1000"], detach: true), id: 3)
        for id: UInt32 in [1, 2] {
            #expect(try client.nextEvent(id: id).kind == .started)
            #expect(try client.next(id: id).payload == Array("ready\n".utf8))
        }
        #expect(try client.nextEvent(id: 3).kind == .started)

        try client.send(Shutdown(graceMs: 300), id: 0)
        try client.exec(ExecRequest(argv: ["/bin/true"]), id: 4)
        #expect(try client.collect(id: 4).error?.code == .shuttingDown)

        let polite = try client.collect(id: 1)
        #expect(polite.stdoutText == "bye\n")
        #expect(polite.exited == .code(3))
        #expect(try client.collect(id: 3).exited == .signal(SIGTERM))
        #expect(try client.collect(id: 2).exited == .signal(SIGKILL))
        #expect(client.waitForClose())
        #expect(agent.waitForExit() == 0)
    }

    @Test(.timeLimit(.minutes(1)))
    func sigtermShutsDownAndAClosedInheritedStreamEndsTheAgent() throws {
        let agent = try startAgent()
        try agent.client.exec(ExecRequest(argv: ["/bin/sleep", "1000"]), id: 1)
        #expect(try agent.client.nextEvent(id: 1).kind == .started)
        _ = kill(agent.pid, SIGTERM)
        #expect(try agent.client.collect(id: 1).exited == .signal(SIGTERM))
        #expect(agent.waitForExit() == 0)

        let other = try startAgent()
        try other.client.exec(ExecRequest(argv: ["/bin/sleep", "1000"], detach: true), id: 1)
        let pid = try other.client.nextEvent(id: 1).decode(Started.self).pid
        #expect(other.stop() == 0)
        #expect(!processIsAlive(pid))
    }
}
