#if canImport(Glibc)
import Glibc
#endif
import Testing
import TetherPosix
import TetherProtocol

@Suite struct FramedLinkTests {
    /// A link whose owner can stop reading, as the relay does for a client it pauses.
    final class PausableLink: FramedLink {
        var reading = true
        override var wantsInput: Bool { reading }
    }

    /// The link, and the raw descriptor of its peer (the caller closes it).
    func connectedPair(loop: EventLoop) throws -> (PausableLink, CInt) {
        var fds: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &fds) == 0)
        let link = PausableLink(socket: try FrameSocket(adopting: OwnedFD(adopting: fds[0])), loop: loop)
        return (link, fds[1])
    }

    @Test(.timeLimit(.minutes(1)))
    func aPausedLinkWhosePeerHangsUpDoesNotSpinTheLoop() throws {
        let loop = try EventLoop()
        let (link, peer) = try connectedPair(loop: loop)
        var events = 0
        try link.watch { _ in events += 1 }
        #expect(loop.isWatching(link.fd))
        link.reading = false
        try link.updateInterest()
        // Nothing to read and nothing to write: out of the epoll set, where a hang-up would be
        // reported on every wait whatever the mask.
        #expect(!loop.isWatching(link.fd))
        close(peer)
        loop.schedule(after: .milliseconds(50)) { loop.stopping = true }
        try loop.run()
        #expect(events == 0)
        // Reading again: the hang-up is seen at once.
        link.reading = true
        try link.updateInterest()
        loop.stopping = false
        loop.schedule(after: .milliseconds(50)) { loop.stopping = true }
        try loop.run()
        #expect(events >= 1)
    }

    @Test(.timeLimit(.minutes(1)))
    func queuedFramesArmWritingUntilTheyAreWrittenAndFramesComeOutInOrder() throws {
        let loop = try EventLoop()
        let (link, peer) = try connectedPair(loop: loop)
        defer { close(peer) }
        try link.watch { _ in }
        for nonce in 1...3 as ClosedRange<UInt64> { link.socket.encoder.append(id: 0, Ping(nonce: nonce)) }
        #expect(try link.flush())
        #expect(link.socket.encoder.isEmpty)
        // What the peer reads decodes to the three frames, in order.
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(peer, $0.baseAddress, $0.count) }
        #expect(n > 0)
        var decoder = FrameDecoder()
        decoder.append(buffer[0..<n])
        var nonces: [UInt64] = []
        while let frame = try decoder.next() { nonces.append(try frame.decode(Ping.self).nonce) }
        #expect(nonces == [1, 2, 3])
        // And frames the peer sends come out of handleFrames, within its budget.
        var out = FrameEncoder()
        for nonce in 4...6 as ClosedRange<UInt64> { out.append(id: 0, Ping(nonce: nonce)) }
        let bytes = out.withPendingBytes { Array($0) }
        #expect(bytes.withUnsafeBytes { Glibc.write(peer, $0.baseAddress, $0.count) } == bytes.count)
        _ = link.socket.read()
        var seen: [UInt64] = []
        let handled = try link.handleFrames(budget: 2) { view in
            seen.append((try? Ping(cbor: view.payload).nonce) ?? 0)
            return true
        }
        #expect(handled == 2 && seen == [4, 5])
        try link.handleFrames { view in
            seen.append((try? Ping(cbor: view.payload).nonce) ?? 0)
            return true
        }
        #expect(seen == [4, 5, 6])
        #expect(link.close() == nil)
        #expect(link.fd == -1)
    }
}
