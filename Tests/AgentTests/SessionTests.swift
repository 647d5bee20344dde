#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherPosix
import TetherProtocol

/// Detached sessions, dropped connections, listing and re-attaching (how a restarted relay
/// adopts what is running).
@Suite struct SessionTests {
    /// An agent listening on a unix socket, so the test can drop and reopen connections.
    final class ListeningAgent {
        let dir: TemporaryDirectory
        let socket: String
        let process: AgentProcess

        init() throws {
            dir = try TemporaryDirectory()
            socket = dir.path + "/agent.sock"
            process = try AgentProcess(arguments: ["--listen", "unix:" + socket])
        }

        func connect() throws -> FrameClient {
            #expect(eventually { FileManager.default.fileExists(atPath: socket) })
            // One connection at a time: the agent accepts the next once the previous closed.
            let client = FrameClient(adopting: try Socket.connect(.unix(path: socket)).release())
            try client.expectHello()
            try client.sendHello()
            return client
        }

        /// Polls the session list until the only session has exited; its number, or nil after
        /// 30 s (a sync test's time limit cannot interrupt it, so the loop bounds itself).
        func waitUntilExited(_ client: FrameClient, id: UInt32) throws -> UInt32? {
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                if let info = try list(client, id: id).first, info.exited != nil { return info.session }
                usleep(2_000)
            }
            return nil
        }

        func list(_ client: FrameClient, id: UInt32) throws -> [SessionInfo] {
            try client.send(ListSessions(), id: id, flags: .start)
            let frame = try client.next(id: id)
            #expect(frame.flags.contains(.end))
            return try frame.decode(SessionList.self).sessions
        }

        deinit {
            _ = kill(process.pid, SIGTERM)
            process.waitForExit()
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func detachThenAttachOnANewIdAndControlItThere() throws {
        let agent = try ListeningAgent()
        let client = try agent.connect()
        try client.exec(sh("echo one; read x; echo two $x; exit 5") { $0.stdin = .pipe }, id: 1)
        #expect(try client.nextEvent(id: 1).kind == .started)
        #expect(try client.next(id: 1).payload == Array("one\n".utf8))
        try client.send(Detach(), id: 1)
        let detached = try client.collect(id: 1)
        #expect(detached.endKind == .detached)
        let number = try #require(detached.detached?.session)

        let listed = try agent.list(client, id: 2)
        let info = try #require(listed.first { $0.session == number })
        #expect(info.detached && !info.attached && info.exited == nil)
        #expect(info.argv.first == "/bin/sh")

        try client.send(Attach(session: number), id: 3, flags: .start)
        #expect(try client.next(id: 3).kind == .attached)
        try client.sendData(id: 3, Array("x\n".utf8))
        let t = try client.collect(id: 3)
        #expect(t.stdoutText == "two x\n")
        #expect(t.exited == .code(5))
        #expect(t.endKind == .done)
        #expect(try agent.list(client, id: 4).isEmpty)
    }

    @Test(.timeLimit(.minutes(1)))
    func aDroppedConnectionKillsAttachedSessionsButNotDetachedOnesWhichReplay() throws {
        let agent = try ListeningAgent()
        let flag = agent.dir.path + "/go"
        var client = try agent.connect()
        try client.exec(ExecRequest(argv: ["/bin/sleep", "1000"]), id: 1)
        let plainPID = try client.nextEvent(id: 1).decode(Started.self).pid
        try client.exec(sh("echo before; while [ ! -e \(flag) ]; do sleep 0.02; done; echo after; exit 4") { $0.detach = true }, id: 2)
        #expect(try client.nextEvent(id: 2).kind == .started)
        #expect(try client.next(id: 2).payload == Array("before\n".utf8))
        client.close()
        // The agent has seen the close once it killed the attached session (it unbinds the
        // detached one in the same step); output before that would still go to the old client.
        #expect(eventually { !processIsAlive(plainPID) }, "the attached session's process should be killed")

        // Output while nobody watches goes to the session's buffer.
        #expect(FileManager.default.createFile(atPath: flag, contents: nil))

        client = try agent.connect()
        let listed = try agent.list(client, id: 10)
        #expect(listed.count == 1)
        let number = try #require(listed.first?.session)
        try client.send(Attach(session: number, replay: true), id: 11, flags: .start)
        let t = try client.collect(id: 11)
        #expect(t.attached?.droppedBytes == 0)
        #expect(t.stdoutText == "after\n")
        #expect(t.exited == .code(4))
        #expect(t.events == [.attached, .exited, .done])
        // Gone once read.
        try client.send(Attach(session: number), id: 12, flags: .start)
        #expect(try client.collect(id: 12).error?.code == .unknownSession)
    }

    @Test(.timeLimit(.minutes(1)))
    func outputBeyondTheBufferIsDroppedOldestFirstAndCounted() throws {
        let agent = try ListeningAgent()
        let total = 3 << 20
        var client = try agent.connect()
        // The output starts only once the first client is gone: what a connection was sent
        // before it closed is neither replayed nor counted as dropped.
        let go = agent.dir.file("go")
        try client.exec(sh("while [ ! -e \(go) ]; do sleep 0.01; done; head -c \(total) /dev/zero | tr '\\0' 'a'; printf END") { $0.detach = true }, id: 1)
        #expect(try client.nextEvent(id: 1).kind == .started)
        client.close()
        client = try agent.connect()   // the agent serves one connection at a time: the first is closed
        #expect(FileManager.default.createFile(atPath: go, contents: nil))
        let number = try #require(try agent.waitUntilExited(client, id: 2))
        try client.send(Attach(session: number), id: 4, flags: .start)
        let t = try client.collect(id: 4)
        let dropped = Int(t.attached?.droppedBytes ?? 0)
        #expect(dropped > 0)
        #expect(t.stdout.count <= 1 << 20)
        // What is replayed is the newest output, and together they are everything.
        #expect(t.stdout.suffix(3) == Array("END".utf8))
        #expect(t.stdout.count + dropped == total + 3)
        #expect(t.exited == .code(0))
    }

    @Test(.timeLimit(.minutes(1)))
    func attachWithoutReplaySkipsTheBufferButKeepsTheExit() throws {
        let agent = try ListeningAgent()
        var client = try agent.connect()
        // It writes and exits only once the first client is gone; otherwise its whole output,
        // `exited` and `done` may reach that client, and nothing is left to attach to.
        let go = agent.dir.file("go")
        try client.exec(sh("while [ ! -e \(go) ]; do sleep 0.01; done; echo buffered") { $0.detach = true }, id: 1)
        #expect(try client.nextEvent(id: 1).kind == .started)
        client.close()
        client = try agent.connect()   // the agent serves one connection at a time: the first is closed
        #expect(FileManager.default.createFile(atPath: go, contents: nil))
        let number = try #require(try agent.waitUntilExited(client, id: 2))
        try client.send(Attach(session: number, replay: false), id: 3, flags: .start)
        let t = try client.collect(id: 3)
        #expect(t.stdout.isEmpty)
        #expect(t.events == [.attached, .exited, .done])
    }
}
