#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherProtocol

/// Every way a session can end closes everything it held: the agent's descriptors come back
/// to where they were, and no child is left behind.
@Suite struct SessionEndTests {
    @Test(.timeLimit(.minutes(2)))
    func everyWayASessionEndsGivesItsDescriptorsBack() throws {
        let agent = try startAgent()
        _ = try run(agent, ExecRequest(argv: ["/bin/true"]), id: 1)   // warm up
        let before = agent.openDescriptorCount()
        var id: UInt32 = 10
        for _ in 0..<20 {
            // done, with a pipe stdin the client closes
            id += 1
            try agent.client.exec(ExecRequest(argv: ["/bin/cat"], stdin: .pipe), id: id)
            try agent.client.sendData(id: id, Array("x".utf8), flags: .end)
            #expect(try agent.client.collect(id: id).stdoutText == "x")

            // failed: the program does not exist
            id += 1
            try agent.client.exec(ExecRequest(argv: ["/no/such/program"]), id: id)
            #expect(try agent.client.collect(id: id).failed != nil)

            // an error on the session's id: the agent ends it and kills its group
            id += 1
            try agent.client.exec(ExecRequest(argv: ["/bin/sleep", "1000"], tty: TerminalSize(rows: 5, cols: 5), stdin: .pipe),
                                  id: id)
            #expect(try agent.client.nextEvent(id: id).kind == .started)
            try agent.client.send(Frame(id: id, kind: .ack, payload: [0xff]))
            #expect(try agent.client.collect(id: id).error?.code == .badPayload)

            // killed
            id += 1
            try agent.client.exec(ExecRequest(argv: ["/bin/sleep", "1000"]), id: id)
            #expect(try agent.client.nextEvent(id: id).kind == .started)
            try agent.client.send(KillRequest(), id: id)
            #expect(try agent.client.collect(id: id).exited == .signal(SIGKILL))

            // timed out
            id += 1
            var timed = ExecRequest(argv: ["/bin/sleep", "1000"])
            timed.timeoutMs = 10
            try agent.client.exec(timed, id: id)
            #expect(try agent.client.collect(id: id).exited == Exited(signal: SIGTERM, timedOut: true))

            // detached, finished while nobody watched, then attached and read to the end
            id += 1
            var detached = sh("read line; echo got $line")
            detached.stdin = .pipe
            try agent.client.exec(detached, id: id)
            let started = try agent.client.nextEvent(id: id)
            #expect(started.kind == .started)
            try agent.client.send(Detach(), id: id)
            let detachedReply = try agent.client.collect(id: id)
            guard let number = detachedReply.detached?.session else {
                Issue.record("no detached reply: \(detachedReply.kinds)")
                return
            }
            id += 1
            try agent.client.send(Attach(session: number, replay: true), id: id, flags: .start)
            #expect(try agent.client.nextEvent(id: id).kind == .attached)
            try agent.client.sendData(id: id, Array("hi\n".utf8), flags: .end)
            let attached = try agent.client.collect(id: id)
            #expect(attached.stdoutText == "got hi\n")
            #expect(attached.endKind == .done)
        }
        #expect(eventually { agent.openDescriptorCount() == before })
        #expect(eventually { childProcesses(of: agent.pid).isEmpty })
    }
}
