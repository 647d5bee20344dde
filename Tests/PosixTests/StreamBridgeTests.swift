#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
import TetherPosix

/// `StreamBridge` between two socket pairs: the test holds the outer ends (blocking), the bridge
/// the inner ones, and the loop runs on the test's thread until the bridge ends.
@Suite struct StreamBridgeTests {
    /// Runs `peer` on its own thread with the two outer ends while the loop serves the bridge.
    func bridged(bufferBytes: Int = 64 << 10, _ peer: @escaping @Sendable (_ left: CInt, _ right: CInt) -> Void) throws
        -> StreamBridge.Ending? {
        // A write to a closed socket is EPIPE, not the end of the test process.
        signal(SIGPIPE, SIG_IGN)
        let left = try Socket.pair()
        let right = try Socket.pair()
        let loop = try EventLoop()
        let bridge = StreamBridge(loop: loop, left.second, right.first, bufferBytes: bufferBytes)
        var ending: StreamBridge.Ending?
        bridge.onEnd = { outcome in
            ending = outcome
            loop.stopping = true
        }
        try bridge.start()
        let outerLeft = left.first.release()
        let outerRight = right.second.release()
        let finished = Mutex(false)
        DedicatedThread.start(named: "bridge-peer") {
            peer(outerLeft, outerRight)
            finished.withLock { $0 = true }
        }
        try loop.run()
        while !finished.withLock({ $0 }) { usleep(1_000) }
        close(outerLeft)
        close(outerRight)
        return ending
    }

    static func readToEnd(_ fd: CInt) -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return result }
            result += chunk.prefix(n)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func bytesCrossBothWaysAndAHalfCloseKeepsTheOtherDirectionOpen() throws {
        let request = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let results = Mutex<(received: [UInt8], reply: [UInt8])>(([], []))
        let ending = try bridged { left, right in
            // Left sends 3 MB and shuts its writing half; right reads to EOF, then answers.
            DedicatedThread.start(named: "bridge-writer") {
                try? FileIO.writeAll(left, request)
                shutdown(left, CInt(SHUT_WR))
            }
            let received = Self.readToEnd(right)
            try? FileIO.writeAll(right, Array("got \(received.count)".utf8))
            shutdown(right, CInt(SHUT_WR))
            let reply = Self.readToEnd(left)
            results.withLock { $0 = (received, reply) }
        }
        let (received, reply) = results.withLock { $0 }
        #expect(received.count == request.count)
        #expect(received == request)
        #expect(String(decoding: reply, as: UTF8.self) == "got 3000000")
        #expect(ending == .finished)
    }

    @Test(.timeLimit(.minutes(1)))
    func aReaderThatStopsStopsItsWriterInsteadOfGrowingTheBridge() throws {
        let accepted = Mutex(0)
        let ending = try bridged(bufferBytes: 16 << 10) { left, right in
            // Nobody reads `right`: the left side's writes must stop succeeding once the
            // bridge's buffer and both sockets' buffers are full.
            _ = fcntl(left, F_SETFL, fcntl(left, F_GETFL) | O_NONBLOCK)
            let chunk = [UInt8](repeating: 0x5A, count: 65536)
            var total = 0
            var idle = 0
            while idle < 200 {
                let n = chunk.withUnsafeBytes { write(left, $0.baseAddress, $0.count) }
                if n > 0 { total += n; idle = 0 } else { idle += 1; usleep(2_000) }
            }
            accepted.withLock { $0 = total }
            // Then the reader drains everything, and all of it arrives.
            shutdown(left, CInt(SHUT_WR))
            let drained = Self.readToEnd(right)
            #expect(drained.count == total)
            shutdown(right, CInt(SHUT_WR))
        }
        let total = accepted.withLock { $0 }
        #expect(total > 0)
        // Two unix socket pairs hold a few hundred KiB each by default; the bridge 16 KiB.
        #expect(total < 16 << 20, "the writer got \(total) bytes in without a reader")
        #expect(ending == .finished)
    }

    @Test(.timeLimit(.minutes(1)))
    func aResetOnOneSideEndsTheBridgeWithTheError() throws {
        let ending = try bridged { left, right in
            try? FileIO.writeAll(left, [1, 2, 3])
            // The right side closes with unread bytes: its peer (the bridge) gets ECONNRESET
            // or EPIPE on the next write, and the left side then sees its connection end.
            var one = [UInt8](repeating: 0, count: 1)
            _ = read(right, &one, 1)
            shutdown(right, CInt(SHUT_RDWR))
            try? FileIO.writeAll(left, [UInt8](repeating: 9, count: 1 << 20))
            _ = Self.readToEnd(left)
        }
        guard case .failed? = ending else {
            Issue.record("expected a failure, got \(String(describing: ending))")
            return
        }
    }
}
