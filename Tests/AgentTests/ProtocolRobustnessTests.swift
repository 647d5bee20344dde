#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherPosix
import TetherProtocol

/// Bytes a peer should not send: the agent answers, keeps the connection unless the byte
/// stream itself is broken (framing) or the peer's version is unsupported, and never exits.
@Suite struct ProtocolRobustnessTests {
    @Test(.timeLimit(.minutes(1)))
    func garbageOnSessionsEndsThoseSessionsOnlyAndAnExecStillWorks() throws {
        let agent = try startAgent()
        let client = agent.client
        // Not CBOR at all.
        try client.send(Frame(id: 5, flags: .start, kind: .exec, payload: [0xFF, 0x00, 0x13]))
        var t = try client.collect(id: 5)
        #expect(t.error?.code == .badPayload)
        #expect(t.endKind == .error)
        // CBOR, but not a map / not an exec.
        try client.send(Frame(id: 6, flags: .start, kind: .exec, payload: [0x83, 0x01, 0x02, 0x03]))
        #expect(try client.collect(id: 6).error?.code == .badPayload)
        try client.send(Frame(id: 7, flags: .start, kind: .exec, payload: ExecRequest(argv: ["x"]).cborBytes.dropLast(1).map { $0 }))
        #expect(try client.collect(id: 7).error?.code == .badPayload)
        // argv of the wrong type.
        var writer = CBORWriter()
        writer.map { $0.entry("argv", "not an array") }
        try client.send(Frame(id: 8, flags: .start, kind: .exec, payload: writer.bytes))
        #expect(try client.collect(id: 8).error?.code == .badPayload)
        // A kind nobody knows, starting a session.
        try client.send(Frame(id: 9, flags: .start, kind: FrameKind(rawValue: 0x7E), payload: []))
        #expect(try client.collect(id: 9).error?.code == .unknownKind)
        // A kind nobody knows on the control channel: an error on id 0, nothing closes.
        try client.send(Frame(id: 0, kind: FrameKind(rawValue: 0x7F), payload: []))
        let control = try client.next(id: 0)
        #expect(control.kind == .error)
        #expect(try control.decode(ErrorMessage.self).code == .unknownKind)
        // A bad control payload.
        try client.send(Frame(id: 0, kind: .ping, payload: [0x01]))
        #expect(try client.next(id: 0).decode(ErrorMessage.self).code == .badPayload)

        // A bad payload on a running session ends that session (END), and kills it.
        try client.exec(ExecRequest(argv: ["/bin/sleep", "1000"]), id: 10)
        let pid = try client.nextEvent(id: 10).decode(Started.self).pid
        try client.send(Frame(id: 10, kind: .resize, payload: [0xA0]))
        t = try client.collect(id: 10)
        #expect(t.error?.code == .badPayload)
        #expect(eventually { !processIsAlive(pid) })

        t = try run(agent, sh("echo still here"), id: 11)
        #expect(t.stdoutText == "still here\n")
        try client.send(Ping(nonce: 99), id: 0)
        #expect(try client.next(id: 0).decode(Pong.self).nonce == 99)
    }

    @Test(.timeLimit(.minutes(1)))
    func aStartOnALiveIdIsRefusedAndLateFramesAreDropped() throws {
        let agent = try startAgent()
        let client = agent.client
        try client.exec(sh("read x; echo got $x") { $0.stdin = .pipe }, id: 1)
        #expect(try client.nextEvent(id: 1).kind == .started)
        try client.exec(ExecRequest(argv: ["/bin/true"]), id: 1)
        let refusal = try client.next(id: 0)
        #expect(try refusal.decode(ErrorMessage.self).code == .sessionInUse)
        try client.sendData(id: 1, Array("yes\n".utf8))
        let t = try client.collect(id: 1)
        #expect(t.stdoutText == "got yes\n")
        #expect(t.endKind == .done)
        // After done: acks, stdin, signals for the id are dropped without a word.
        try client.send(Ack(bytes: 100), id: 1)
        try client.sendData(id: 1, Array("more".utf8))
        try client.send(SignalRequest(number: SIGTERM), id: 1)
        try client.send(Ping(nonce: 5), id: 0)
        let next = try client.receiveAny()
        #expect(next.id == 0 && next.kind == .pong)
    }

    @Test(.timeLimit(.minutes(1)))
    func framingErrorsCloseThatConnectionOnlyAndTheNextOneWorks() throws {
        let dir = try TemporaryDirectory()
        let socket = dir.path + "/agent.sock"
        let agent = try AgentProcess(arguments: ["--listen", "unix:" + socket])
        func connect() throws -> FrameClient {
            let address = Address.unix(path: socket)
            #expect(eventually { FileManager.default.fileExists(atPath: socket) })
            let client = FrameClient(adopting: try Socket.connect(address).release())
            try client.expectHello()
            try client.sendHello()
            return client
        }
        // A length above 1 MiB + 6.
        var first = try connect()
        try first.send(raw: [0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0])
        var reply = try first.next(id: 0)
        #expect(try reply.decode(ErrorMessage.self).code == .framing)
        #expect(first.waitForClose())
        // A length below 6.
        first = try connect()
        try first.send(raw: [0, 0, 0, 2, 0, 0])
        reply = try first.next(id: 0)
        #expect(try reply.decode(ErrorMessage.self).code == .framing)
        #expect(first.waitForClose())
        // A hello with version 0.
        let old = try connect()
        try old.send(Hello(version: 0, role: .client, name: "old", pid: 1), id: 0)
        reply = try old.next(id: 0)
        #expect(try reply.decode(ErrorMessage.self).code == .unsupported)
        #expect(old.waitForClose())

        let fine = try connect()
        try fine.exec(sh("echo works"), id: 1)
        #expect(try fine.collect(id: 1).stdoutText == "works\n")
        #expect(processIsAlive(agent.pid))
        fine.close()
        _ = kill(agent.pid, SIGTERM)
        #expect(agent.waitForExit() == 0)
    }

    @Test(.timeLimit(.minutes(1)))
    func randomBytesNeverKillTheAgent() throws {
        let dir = try TemporaryDirectory()
        let socket = dir.path + "/agent.sock"
        let agent = try AgentProcess(arguments: ["--listen", "unix:" + socket])
        #expect(eventually { FileManager.default.fileExists(atPath: socket) })
        var generator = SystemRandomNumberGenerator()
        for round in 0..<30 {
            let client = FrameClient(adopting: try Socket.connect(.unix(path: socket)).release())
            try client.expectHello()
            // Valid headers with random kinds, flags, ids and payloads, then pure noise.
            var bytes: [UInt8] = []
            for _ in 0..<20 {
                let payload = (0..<Int.random(in: 0..<40, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                var encoder = FrameEncoder()
                var kind = UInt8.random(in: 0...0x30, using: &generator)
                if kind == FrameKind.shutdown.rawValue { kind = 0x2F }   // a valid shutdown would end the test's agent
                encoder.append(id: UInt32.random(in: 0...3, using: &generator), flags: FrameFlags(rawValue: UInt8.random(in: 0...3, using: &generator)),
                               kind: FrameKind(rawValue: kind), payload: payload)
                encoder.withPendingBytes { bytes += $0 }
            }
            if round % 2 == 1 { bytes += (0..<64).map { _ in UInt8.random(in: 0...255, using: &generator) } }
            try? client.send(raw: bytes)
            client.shutdownWrite()
            _ = client.waitForClose(timeout: 10)
            #expect(processIsAlive(agent.pid))
        }
        let client = FrameClient(adopting: try Socket.connect(.unix(path: socket)).release())
        try client.expectHello()
        try client.exec(sh("echo alive"), id: 1)
        #expect(try client.collect(id: 1).stdoutText == "alive\n")
        client.close()
        _ = kill(agent.pid, SIGTERM)
        #expect(agent.waitForExit() == 0)
    }
}
