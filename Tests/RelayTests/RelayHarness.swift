#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import Synchronization
import TestSupport
import TetherPosix
import TetherProtocol
@testable import TetherRelay

/// An in-process relay for unit tests of its internals: the "agent" is the test's end of a
/// socketpair (`agent`, frames built by hand), the relay listens on a unix socket in a
/// temporary directory. End-to-end tests use the real agent instead (`AgentHarness`).
final class RelayHarness: @unchecked Sendable {
    let directory: TemporaryDirectory
    let agent: FramePeer
    let relay: Relay
    let socketPath: String
    private let finished = DispatchSemaphore(value: 0)
    /// What `run()` threw (nil while running or after a clean stop).
    final class Outcome: Sendable { let error = Mutex<RelayError?>(nil) }
    let outcome = Outcome()

    /// Starts the relay and plays the agent's side of the handshake; `sessions` is what the
    /// agent answers to the relay's listSessions.
    init(sessions: [SessionInfo] = [], configure: (inout RelayConfiguration) -> Void = { _ in }) throws {
        directory = try TemporaryDirectory("relay")
        socketPath = directory.file("relay.sock")
        let pair = try Socket.pair()
        // The relay owns its end from here (an fd: address is adopted as it is).
        let relayEnd = pair.second.release()
        agent = FramePeer(adopting: pair.first)
        var configuration = RelayConfiguration(agent: .fd(relayEnd), listen: .unix(path: socketPath))
        configuration.log = ExecLog.Configuration(directory: directory.path)
        configuration.diagnostics = { _ in }
        configure(&configuration)
        relay = try Relay(configuration)
        let relay = self.relay
        let thread = Thread { [outcome, finished] in
            do throws(RelayError) { try relay.run() } catch { outcome.error.withLock { $0 = error } }
            finished.signal()
        }
        thread.start()
        let hello = try agent.expect(.hello)
        let role = try hello.decode(Hello.self).role
        precondition(role == .relay)
        try agent.send(id: 0, Hello(role: .agent, name: "scripted", pid: 1, capabilities: ["exec/1", "pty/1"], agentVersion: "test-1"))
        let list = try agent.expect(.listSessions)
        try agent.send(id: list.id, flags: .end, SessionList(sessions: sessions))
    }

    deinit { stop() }

    /// A raw client: connected, hello exchanged.
    func client() throws -> FramePeer {
        var peer: FramePeer?
        for _ in 0..<200 where peer == nil {
            peer = try? FramePeer.connect(socketPath)
            if peer == nil { usleep(10_000) }
        }
        guard let peer else { throw FramePeerError.unexpected("cannot connect to \(socketPath)") }
        try peer.send(id: 0, Hello(role: .client, name: "test", pid: getpid()))
        _ = try peer.expect(.hello)
        return peer
    }

    /// Stops the relay and waits for `run()` to return; what it threw, if anything.
    @discardableResult
    func stop() -> RelayError? {
        relay.stop()
        return waitForExit()
    }

    /// Waits for `run()` to return (it stops by itself when the agent cannot come back).
    func waitForExit(timeout: Double = 30) -> RelayError? {
        if finished.wait(timeout: .now() + timeout) == .success { finished.signal() }
        return outcome.error.withLock { $0 }
    }

    var logPath: String { directory.file("exec.log") }
}

extension FramePeer {
    /// Asks `listSessions` (ids from 100 up) until `session` is listed with no client attached:
    /// the relay has seen its client go.
    func eventuallyListsUnattached(_ session: UInt32) -> Bool {
        var listID: UInt32 = 100
        return eventually {
            listID += 1
            guard (try? send(id: listID, flags: .start, ListSessions())) != nil,
                  let list = try? expect(.sessionList, id: listID).decode(SessionList.self) else { return false }
            return list.sessions.contains { $0.session == session && !$0.attached }
        }
    }

    /// Sends `exec` (START) on `id` and returns the frame the agent side received for it.
    func exec(_ request: ExecRequest, id: UInt32, agent: FramePeer) throws -> Frame {
        try send(id: id, flags: .start, request)
        return try agent.expect(.exec)
    }
}
