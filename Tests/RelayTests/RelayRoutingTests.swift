#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherProtocol
@testable import TetherRelay

/// The relay's routing and flow control, against a scripted agent (frames built by hand on a
/// socketpair). What the real agent does is covered by the end-to-end tests. Serialized:
/// the tests block on sockets (with deadlines), which would starve a parallel run.
@Suite(.serialized, .timeLimit(.minutes(1))) struct RelayRoutingTests {
    init() { signal(SIGPIPE, SIG_IGN) }

    @Test func helloToClientsCarriesTheAgentsCapabilitiesAndVersion() throws {
        let harness = try RelayHarness()
        let client = try FramePeer.connect(harness.socketPath)
        let hello = try client.expect(.hello).decode(Hello.self)
        #expect(hello.role == .relay)
        #expect(hello.capabilities == ["exec/1", "pty/1", "relay/1"])
        #expect(hello.agentVersion == "test-1")
        #expect(hello.version == protocolVersion)
    }

    @Test func sessionIdsAreRewrittenBothWays() throws {
        let harness = try RelayHarness()
        let a = try harness.client(), b = try harness.client()
        let atAgentA = try a.exec(ExecRequest(argv: ["a"]), id: 1, agent: harness.agent)
        let atAgentB = try b.exec(ExecRequest(argv: ["b"]), id: 1, agent: harness.agent)
        #expect(atAgentA.id != atAgentB.id)
        #expect(atAgentA.flags.contains(.start))
        // The payload is passed on byte for byte.
        #expect(try atAgentB.decode(ExecRequest.self).argv == ["b"])
        try harness.agent.send(id: atAgentB.id, Started(pid: 22))
        try harness.agent.send(id: atAgentA.id, Started(pid: 11))
        try harness.agent.send(Frame(id: atAgentA.id, kind: .stdout, payload: Array("from a".utf8)))
        #expect(try a.expect(.started, id: 1).decode(Started.self).pid == 11)
        #expect(try b.expect(.started, id: 1).decode(Started.self).pid == 22)
        #expect(try a.expect(.stdout, id: 1).payload == Array("from a".utf8))
        // Control frames from a client reach the agent on the agent's id.
        try b.send(id: 1, SignalRequest(number: 15))
        let signal = try harness.agent.expect(.signal)
        #expect(signal.id == atAgentB.id)
        try harness.agent.send(id: atAgentA.id, Exited.code(0))
        try harness.agent.send(id: atAgentA.id, flags: .end, Done())
        _ = try a.expect(.exited, id: 1)
        #expect(try a.expect(.done, id: 1).flags.contains(.end))
        // The client may reuse its id once it read END.
        let again = try a.exec(ExecRequest(argv: ["a2"]), id: 1, agent: harness.agent)
        #expect(again.id != atAgentA.id && again.id != atAgentB.id)
    }

    @Test func theAgentIsAckedOnlyAsTheClientConsumes() throws {
        let harness = try RelayHarness()
        let client = try harness.client()
        let exec = try client.exec(ExecRequest(argv: ["yes"]), id: 7, agent: harness.agent)
        let chunk = [UInt8](repeating: 0x79, count: 64 << 10)
        for _ in 0..<4 { try harness.agent.send(Frame(id: exec.id, kind: .stdout, payload: chunk)) }
        // The whole window reaches the client unacked, and the relay acks nothing by itself.
        let received = try client.readData(.stdout, id: 7, count: 256 << 10)
        #expect(received.count == 256 << 10)
        try client.send(id: 7, Ack(bytes: 128 << 10))
        let ack = try harness.agent.expect(.ack, id: exec.id)
        #expect(try ack.decode(Ack.self).bytes == 128 << 10)
        // An ack for more than was sent widens the client's window (acking ahead), to 512 KiB
        // and no further: the agent may then be 512 KiB ahead of the client, no more.
        try client.send(id: 7, Ack(bytes: 10 << 20))
        let second = try harness.agent.expect(.ack, id: exec.id)
        #expect(try second.decode(Ack.self).bytes == UInt64(FlowControl.outputWindowBytes) - (128 << 10))
    }

    @Test func aClientThatGoesAwayGetsItsSessionKilledButNotItsDetachedOnes() throws {
        let harness = try RelayHarness()
        let client = try harness.client()
        let plain = try client.exec(ExecRequest(argv: ["sleep", "9"]), id: 1, agent: harness.agent)
        let kept = try client.exec(ExecRequest(argv: ["sleep", "9"], detach: true), id: 2, agent: harness.agent)
        client.close()
        let kill = try harness.agent.expect(.kill)
        #expect(kill.id == plain.id)
        // Nothing for the detached one: the next frame the agent sees is the probe's.
        let probe = try harness.client()
        try probe.send(id: 5, flags: .start, ListSessions())
        let list = try probe.expect(.sessionList, id: 5).decode(SessionList.self)
        #expect(list.sessions.map(\.session).contains(kept.id))
        #expect(list.sessions.first { $0.session == kept.id }?.detached == true)
        try harness.agent.send(id: plain.id, flags: .end, Done())
    }

    @Test func aDetachedSessionIsReplayedToTheNextAttachWithWhatWasDropped() throws {
        let harness = try RelayHarness { $0.replayBytes = 1 << 20 }
        let client = try harness.client()
        let exec = try client.exec(ExecRequest(argv: ["producer"], detach: true), id: 3, agent: harness.agent)
        try harness.agent.send(id: exec.id, Started(pid: 99))
        _ = try client.expect(.started, id: 3)
        client.close()
        // Output the relay forwards before it noticed the close went to that client and is
        // not the replay's; wait until the relay lists the session as unwatched.
        let observer = try harness.client()
        #expect(observer.eventuallyListsUnattached(exec.id))
        observer.close()
        // 3 MiB while nobody watches: the relay keeps reading (acking) and keeps the last 1 MiB.
        var sent: [UInt8] = []
        var acked: UInt64 = 0
        for i in 0..<48 {
            let chunk = [UInt8](repeating: UInt8(i), count: 64 << 10)
            sent += chunk
            try harness.agent.send(Frame(id: exec.id, kind: .stdout, payload: chunk))
            // The agent stays within its window, so it waits for the relay's acks.
            while UInt64(sent.count) - acked > UInt64(FlowControl.initialWindowBytes) - UInt64(64 << 10) {
                acked += try harness.agent.expect(.ack, id: exec.id).decode(Ack.self).bytes
            }
        }
        try harness.agent.send(id: exec.id, Exited.code(4))
        try harness.agent.send(id: exec.id, flags: .end, Done())

        let next = try harness.client()
        try next.send(id: 9, flags: .start, Attach(session: exec.id))
        let attached = try next.expect(.attached, id: 9).decode(Attached.self)
        #expect(attached.session == exec.id)
        #expect(attached.pid == 99)
        #expect(attached.droppedBytes == UInt64(sent.count - (1 << 20)))
        let replay = try next.readData(.stdout, id: 9, count: 1 << 20, ack: true)
        #expect(replay == Array(sent.suffix(1 << 20)))
        #expect(try next.expect(.exited, id: 9).decode(Exited.self) == .code(4))
        #expect(try next.expect(.done, id: 9).flags.contains(.end))
    }

    /// Output the relay wrote towards a client that then vanished, without the client acking
    /// it, reaches nobody: the next attach counts it as dropped, so what it is told adds up.
    @Test func bytesSentToAVanishedClientAndNotAckedCountAsDropped() throws {
        let harness = try RelayHarness { $0.replayBytes = 1 << 20 }
        let client = try harness.client()
        let exec = try client.exec(ExecRequest(argv: ["producer"], detach: true), id: 3, agent: harness.agent)
        try harness.agent.send(id: exec.id, Started(pid: 99))
        _ = try client.expect(.started, id: 3)
        // 100 KiB, within the client's window: the relay sends it all on, and the client reads
        // it but acks nothing before it goes away.
        let output = [UInt8](repeating: 0x61, count: 100 << 10)
        try harness.agent.send(Frame(id: exec.id, kind: .stdout, payload: Array(output[..<(64 << 10)])))
        try harness.agent.send(Frame(id: exec.id, kind: .stdout, payload: Array(output[(64 << 10)...])))
        #expect(try client.readData(.stdout, id: 3, count: output.count) == output)
        client.close()
        // Until the relay has seen the close, the session's end would still go to that client.
        let next = try harness.client()
        #expect(next.eventuallyListsUnattached(exec.id))
        try harness.agent.send(id: exec.id, Exited.code(0))
        try harness.agent.send(id: exec.id, flags: .end, Done())

        try next.send(id: 9, flags: .start, Attach(session: exec.id))
        let attached = try next.expect(.attached, id: 9).decode(Attached.self)
        #expect(attached.droppedBytes == UInt64(output.count))
        #expect(try next.expect(.exited, id: 9).decode(Exited.self) == .code(0))
        #expect(try next.expect(.done, id: 9).flags.contains(.end))
    }

    @Test func attachingATakenOrUnknownSessionIsATypedError() throws {
        let harness = try RelayHarness()
        let owner = try harness.client()
        let exec = try owner.exec(ExecRequest(argv: ["x"]), id: 1, agent: harness.agent)
        let other = try harness.client()
        try other.send(id: 1, flags: .start, Attach(session: exec.id))
        let taken = try other.expect(.error, id: 1)
        #expect(taken.flags.contains(.end))
        #expect(try taken.decode(ErrorMessage.self).code == .sessionInUse)
        try other.send(id: 2, flags: .start, Attach(session: 4242))
        #expect(try other.expect(.error, id: 2).decode(ErrorMessage.self).code == .unknownSession)
    }

    @Test func whenTheAgentGoesAwayEverySessionEndsWithAgentGone() throws {
        // A deadline far beyond the test: giving up must come from the inherited fd, not time.
        let harness = try RelayHarness { $0.agentTimeout = .seconds(600) }
        let client = try harness.client()
        _ = try client.exec(ExecRequest(argv: ["sleep", "9"]), id: 4, agent: harness.agent)
        harness.agent.close()
        let error = try client.expect(.error, id: 4)
        #expect(error.flags.contains(.end))
        #expect(try error.decode(ErrorMessage.self).code == .agentGone)
        // An inherited fd cannot be dialled again: the relay gives up and says why, and never
        // touches the number again (it once re-adopted it every 50 ms, closing whatever this
        // process had opened under that number meanwhile: other tests' pipes and sockets).
        let stopped = harness.waitForExit()
        guard case .agentUnreachable(_, _, let lastError)? = stopped else {
            Issue.record("the relay should stop with agentUnreachable, not \(String(describing: stopped))")
            return
        }
        #expect(lastError.contains("cannot be connected again"), "\(lastError)")
        #expect(client.waitForClose())
    }

    @Test func silenceFromTheAgentIsReportedAsAgentUnresponsive() throws {
        let harness = try RelayHarness {
            $0.pingInterval = .milliseconds(20)
            $0.unresponsiveAfter = .milliseconds(300)
        }
        let client = try harness.client()
        let running = try client.exec(ExecRequest(argv: ["sleep"]), id: 1, agent: harness.agent)
        harness.agent.answersPings = false
        let notice = try client.expect(.error, id: 0)
        #expect(try notice.decode(ErrorMessage.self).code == .agentUnresponsive)
        try client.send(id: 2, flags: .start, ExecRequest(argv: ["true"]))
        let refused = try client.expect(.error, id: 2)
        #expect(refused.flags.contains(.end))
        #expect(try refused.decode(ErrorMessage.self).code == .agentUnresponsive)
        // The agent speaks again; once the client has seen a frame sent after that, the relay
        // has heard it too, and requests go through again.
        harness.agent.answersPings = true
        try harness.agent.send(Frame(id: running.id, kind: .stdout, payload: [1]))
        _ = try client.expect(.stdout, id: 1)
        _ = try client.exec(ExecRequest(argv: ["true"]), id: 3, agent: harness.agent)
    }

    @Test func clientPingsGoToTheAgentAndBack() throws {
        let harness = try RelayHarness()
        let client = try harness.client()
        harness.agent.answersPings = false
        try client.send(id: 0, Ping(nonce: 777))
        // The scripted agent answers (the relay's nonce is its own, not the client's).
        let ping = try harness.agent.expect(.ping)
        try harness.agent.send(id: 0, Pong(nonce: try ping.decode(Ping.self).nonce))
        #expect(try client.expect(.pong, id: 0).decode(Pong.self).nonce == 777)
    }

    @Test func theAgentsDetachedSessionsAreAdoptedOnConnect() throws {
        let harness = try RelayHarness(sessions: [
            SessionInfo(session: 42, pid: 420, argv: ["server"], tty: false, detached: true, attached: false, startedNs: 5),
            SessionInfo(session: 43, pid: 430, argv: ["other"], tty: false, detached: false, attached: false, startedNs: 6),
        ])
        let attach = try harness.agent.expect(.attach)
        #expect(attach.flags.contains(.start))
        #expect(try attach.decode(Attach.self) == Attach(session: 42, replay: true))
        try harness.agent.send(id: attach.id, Attached(session: 42, pid: 420, tty: false, droppedBytes: 10))
        try harness.agent.send(Frame(id: attach.id, kind: .stdout, payload: Array("while you were away\n".utf8)))

        let client = try harness.client()
        try client.send(id: 1, flags: .start, ListSessions())
        let list = try client.expect(.sessionList, id: 1).decode(SessionList.self)
        #expect(list.sessions.map(\.session) == [42])
        #expect(list.sessions.first?.argv == ["server"])
        try client.send(id: 2, flags: .start, Attach(session: 42))
        let attached = try client.expect(.attached, id: 2).decode(Attached.self)
        #expect(attached.droppedBytes == 10)
        #expect(try client.expect(.stdout, id: 2).payload == Array("while you were away\n".utf8))
    }

    @Test func detachingARunningSessionHandsItBackToTheAgentAndReattaches() throws {
        let harness = try RelayHarness()
        let client = try harness.client()
        let exec = try client.exec(ExecRequest(argv: ["long"]), id: 1, agent: harness.agent)
        try client.send(id: 1, Detach())
        let detached = try client.expect(.detached, id: 1)
        #expect(detached.flags.contains(.end))
        let number = try detached.decode(Detached.self).session
        #expect(try harness.agent.expect(.detach).id == exec.id)
        try harness.agent.send(id: exec.id, flags: .end, Detached(session: 77))
        let attach = try harness.agent.expect(.attach)
        #expect(try attach.decode(Attach.self).session == 77)
        try harness.agent.send(id: attach.id, Attached(session: 77, pid: 5, tty: false, droppedBytes: 0))
        try harness.agent.send(Frame(id: attach.id, kind: .stdout, payload: [1, 2, 3]))
        client.close()  // a detached session survives its client

        let next = try harness.client()
        try next.send(id: 3, flags: .start, Attach(session: number))
        _ = try next.expect(.attached, id: 3)
        #expect(try next.expect(.stdout, id: 3).payload == [1, 2, 3])
    }

    @Test func signalSessionReachesAnotherClientsSession() throws {
        let harness = try RelayHarness()
        let owner = try harness.client()
        let exec = try owner.exec(ExecRequest(argv: ["sleep"]), id: 1, agent: harness.agent)
        let other = try harness.client()
        try other.send(id: 1, flags: .start, SignalSession(session: exec.id, number: 9))
        #expect(try other.expect(.done, id: 1).flags.contains(.end))
        let signal = try harness.agent.expect(.signal)
        #expect(signal.id == exec.id)
        #expect(try signal.decode(SignalRequest.self).number == 9)
        try other.send(id: 2, flags: .start, SignalSession(session: 999, number: 9))
        #expect(try other.expect(.error, id: 2).decode(ErrorMessage.self).code == .unknownSession)
    }

    @Test func stdinAndItsAcksPassThrough() throws {
        let harness = try RelayHarness()
        let client = try harness.client()
        let exec = try client.exec(ExecRequest(argv: ["cat"], stdin: .pipe), id: 1, agent: harness.agent)
        try client.send(Frame(id: 1, kind: .stdin, payload: Array("hi\n".utf8)))
        try client.send(Frame(id: 1, flags: .end, kind: .stdin, payload: []))
        let data = try harness.agent.expect(.stdin)
        #expect(data.id == exec.id && data.payload == Array("hi\n".utf8))
        #expect(try harness.agent.expect(.stdin).flags.contains(.end))
        try harness.agent.send(id: exec.id, Ack(bytes: 3))
        #expect(try client.expect(.ack, id: 1).decode(Ack.self).bytes == 3)
    }

    @Test func kindsTheRelayDoesNotKnowArePassedThrough() throws {
        let harness = try RelayHarness()
        let client = try harness.client()
        let future = FrameKind(rawValue: 0x70)
        try client.send(Frame(id: 6, flags: .start, kind: future, payload: [0xA0]))
        let atAgent = try harness.agent.expect(future)
        #expect(atAgent.payload == [0xA0])
        try harness.agent.send(Frame(id: atAgent.id, flags: .end, kind: FrameKind(rawValue: 0x31), payload: [0xA0]))
        #expect(try client.expect(FrameKind(rawValue: 0x31), id: 6).flags.contains(.end))
    }

    @Test func aClientSendingGarbageIsClosedAndOthersCarryOn() throws {
        let harness = try RelayHarness()
        let good = try harness.client()
        let bad = try harness.client()
        try bad.sendRaw([0, 0, 0, 3, 1, 2, 3])
        #expect(try bad.expect(.error, id: 0).decode(ErrorMessage.self).code == .framing)
        #expect(bad.waitForClose())
        harness.agent.answersPings = false
        try good.send(id: 0, Ping(nonce: 1))
        let ping = try harness.agent.expect(.ping)
        try harness.agent.send(id: 0, Pong(nonce: try ping.decode(Ping.self).nonce))
        _ = try good.expect(.pong)
    }

    @Test func aStartOnAnIdInUseIsRefusedOnTheControlChannel() throws {
        let harness = try RelayHarness()
        let client = try harness.client()
        _ = try client.exec(ExecRequest(argv: ["x"]), id: 1, agent: harness.agent)
        try client.send(id: 1, flags: .start, ExecRequest(argv: ["y"]))
        #expect(try client.expect(.error, id: 0).decode(ErrorMessage.self).code == .sessionInUse)
    }

    @Test func anUndecodableExecIsRefusedWithoutReachingTheAgent() throws {
        let harness = try RelayHarness()
        let client = try harness.client()
        try client.send(Frame(id: 1, flags: .start, kind: .exec, payload: [0xA0]))  // {} has no argv
        let error = try client.expect(.error, id: 1)
        #expect(error.flags.contains(.end))
        #expect(try error.decode(ErrorMessage.self).code == .badPayload)
    }
}
