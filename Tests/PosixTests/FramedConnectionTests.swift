#if canImport(Glibc)
import Glibc
#endif
import Testing
import TetherPosix
import TetherProtocol

@Suite struct FramedConnectionTests {
    /// A peer that sends several requests at once, each answered with more than the connection
    /// queues before it stops reading: the requests after the pause were read already and sit in
    /// the decoder, where no readiness announces them. Each must still be answered once the
    /// queue drains, without the peer sending anything more.
    @Test(.timeLimit(.minutes(1)))
    func framesReadBeforeAPauseAreHandledWhenReadingResumes() throws {
        var fds: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &fds) == 0)
        defer { close(fds[1]) }
        var requests = FrameEncoder()
        for nonce in 1...3 as ClosedRange<UInt64> { requests.append(id: 0, Ping(nonce: nonce)) }
        let bytes = requests.withPendingBytes { Array($0) }
        #expect(bytes.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) } == bytes.count)

        let loop = try EventLoop()
        var limits = FramedConnection.Limits()
        limits.inputPauseBytes = 4096
        limits.highWaterBytes = 2048
        limits.lowWaterBytes = 1024
        let connection = FramedConnection(socket: try FrameSocket(adopting: OwnedFD(adopting: fds[0])), loop: loop, limits: limits)
        var answered: [UInt64] = []
        let answer = [UInt8](repeating: 0x41, count: 8192)
        connection.onFrame = { frame in
            guard let ping = try? Ping(cbor: frame.payload) else { return }
            answered.append(ping.nonce)
            answer.withUnsafeBytes { connection.appendData(id: 1, kind: .stdout, $0) }
            connection.send(Pong(nonce: ping.nonce), id: 0)
        }
        connection.start()
        loop.schedule(after: .milliseconds(300)) { loop.stopping = true }
        try loop.run()
        #expect(answered == [1, 2, 3])
        connection.close()
    }
}
