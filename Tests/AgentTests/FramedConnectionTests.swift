#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherPosix
import TetherProtocol

/// The framed connection the agent serves the host with (and relay and client can use):
/// frames both ways, backpressure, framing errors, and descriptors epoll cannot watch.
@Suite struct FramedConnectionTests {
    /// Two connected framed connections on one loop, over a socketpair.
    final class Pair {
        let loop: EventLoop
        let left: FramedConnection
        let right: FramedConnection

        init(limits: FramedConnection.Limits = .init()) throws {
            loop = try EventLoop()
            var fds: [CInt] = [-1, -1]
            _ = try retrying { socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0, &fds) }
            left = FramedConnection(socket: try FrameSocket(adopting: OwnedFD(adopting: fds[0])), loop: loop, limits: limits)
            right = FramedConnection(socket: try FrameSocket(adopting: OwnedFD(adopting: fds[1])), loop: loop, limits: limits)
        }

        /// Runs the loop until `done` holds (checked after every batch of events), or fails the
        /// test after a minute of no progress.
        func run(until done: @escaping () -> Bool) {
            func check() {
                // After the loop polled again: `soon` would run before any event, forever.
                if done() { loop.stopping = true } else { loop.afterReadyEvents { check() } }
            }
            loop.stopping = false
            let guardTimer = loop.schedule(after: .seconds(60)) { [loop] in loop.stopping = true }
            loop.afterReadyEvents { check() }
            try? loop.run()
            loop.cancel(guardTimer)
            #expect(done())
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func framesArriveInOrderBothWays() throws {
        let pair = try Pair()
        var seenRight: [UInt64] = []
        var seenLeft: [UInt64] = []
        pair.right.onFrame = { frame in
            if let ping = try? Ping(cbor: frame.payload) {
                seenRight.append(ping.nonce)
                pair.right.send(Pong(nonce: ping.nonce), id: frame.header.id)
            }
        }
        pair.left.onFrame = { frame in if let pong = try? Pong(cbor: frame.payload) { seenLeft.append(pong.nonce) } }
        pair.left.start()
        pair.right.start()
        for nonce in 0..<100 as Range<UInt64> { pair.left.send(Ping(nonce: nonce), id: 0) }
        pair.run { seenLeft.count == 100 }
        #expect(seenRight == Array(0..<100))
        #expect(seenLeft == Array(0..<100))
    }

    /// A peer that does not read makes the queue congested; once it reads, `onDrained` runs
    /// and nothing was lost.
    @Test(.timeLimit(.minutes(1)))
    func aQueueAboveTheHighWaterMarkIsCongestedUntilThePeerReads() throws {
        var limits = FramedConnection.Limits()
        limits.highWaterBytes = 256 << 10
        limits.lowWaterBytes = 64 << 10
        limits.eagerFlushBytes = 16 << 10
        let pair = try Pair(limits: limits)
        var received = 0
        var drained = 0
        pair.left.onDrained = { drained += 1 }
        pair.right.onFrame = { frame in received += frame.header.payloadCount }
        pair.left.start()
        let chunk = [UInt8](repeating: 7, count: 64 << 10)
        var sent = 0
        // The right side is not started yet: nothing reads, the socket buffer fills.
        while !pair.left.congested && sent < 64 << 20 {
            chunk.withUnsafeBytes { pair.left.appendData(id: 1, kind: .stdout, $0) }
            pair.left.queued()
            sent += chunk.count
        }
        #expect(pair.left.congested)
        pair.right.start()
        pair.run { received == sent && drained > 0 }
        #expect(!pair.left.congested)
        #expect(drained == 1)
    }

    /// Bytes that cannot be frames: the owner hears it (and may answer) and the connection
    /// closes after flushing that answer.
    @Test(.timeLimit(.minutes(1)))
    func aFramingErrorIsReportedAndTheAnswerLeavesBeforeTheClose() throws {
        let pair = try Pair()
        var framing: WireError?
        var closed: FramedConnection.CloseReason?
        var answer: ErrorMessage?
        var leftClosed = false
        pair.right.onFramingError = { error in
            framing = error
            pair.right.send(ErrorMessage(code: .framing, message: error.description), id: 0)
            pair.right.closeAfterFlush()
        }
        pair.right.onClosed = { closed = $0 }
        pair.left.onFrame = { frame in answer = try? ErrorMessage(cbor: frame.payload) }
        pair.left.onClosed = { _ in leftClosed = true }
        pair.right.start()
        pair.left.start()
        // A length of 2: below the smallest frame.
        try sendRaw([0, 0, 0, 2, 0, 0, 0, 0, 0, 0], on: pair.left)
        pair.run { leftClosed }
        #expect(framing == .frameTooSmall(length: 2))
        #expect(closed == .closed)
        #expect(answer?.code == .framing)
    }

    /// epoll cannot watch a regular file (EPERM): the connection closes with that reason
    /// instead of waiting forever for events that never come.
    @Test func aDescriptorEpollRefusesClosesTheConnection() throws {
        let loop = try EventLoop()
        let dir = try TemporaryDirectory("tether-framed")
        let fd = open(dir.path + "/file", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        #expect(fd >= 0)
        let connection = FramedConnection(socket: try FrameSocket(adopting: OwnedFD(adopting: fd)), loop: loop)
        var reason: FramedConnection.CloseReason?
        connection.onClosed = { reason = $0 }
        connection.start()
        #expect(reason == .watchFailed(Errno(rawValue: EPERM)))
        #expect(connection.isClosed)
        #expect(fcntl(fd, F_GETFD) == -1)   // closed, not leaked
    }

    /// The sub-second part counts (the agent's old conversion dropped it).
    @Test func durationsConvertWithTheirSubSecondPart() {
        #expect(Duration.milliseconds(1500).nanoseconds == 1_500_000_000)
        #expect(Duration.nanoseconds(7).nanoseconds == 7)
        #expect(Duration.seconds(-1).nanoseconds == 0)
        #expect(Duration.seconds(Int64.max).nanoseconds == UInt64.max)
    }

    /// Writes bytes that bypass the encoder, as a broken peer would.
    private func sendRaw(_ bytes: [UInt8], on connection: FramedConnection) throws {
        try bytes.withUnsafeBytes { raw in _ = try FileIO.write(connection.fd, raw) }
    }
}
