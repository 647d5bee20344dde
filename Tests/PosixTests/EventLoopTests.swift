#if canImport(Glibc)
import Glibc
#endif
import Testing
import TetherPosix

@Suite struct EventLoopTests {
    @Test(.timeLimit(.minutes(1)))
    func timersFireInDeadlineOrderAndCancelledOnesDoNot() throws {
        let loop = try EventLoop()
        var fired: [Int] = []
        loop.schedule(after: .milliseconds(30)) { fired.append(3) }
        loop.schedule(after: .milliseconds(10)) { fired.append(1) }
        let cancelled = loop.schedule(after: .milliseconds(20)) { fired.append(99) }
        loop.schedule(after: .milliseconds(20)) { fired.append(2) }
        loop.cancel(cancelled)
        loop.schedule(after: .milliseconds(40)) { loop.stopping = true }
        let start = EventLoop.now()
        try loop.run()
        #expect(fired == [1, 2, 3])
        #expect(EventLoop.now() - start >= 40_000_000)
    }

    @Test(.timeLimit(.minutes(1)))
    func readableDescriptorsReachTheirHandlerUntilUnwatched() throws {
        let loop = try EventLoop()
        let pipe = try Pipe(nonBlocking: true)
        var received: [UInt8] = []
        try loop.watch(pipe.readEnd.raw, events: EventLoop.readable) { _ in
            var buffer = [UInt8](repeating: 0, count: 16)
            if case .bytes(let n)? = try? buffer.withUnsafeMutableBytes({ try FileIO.read(pipe.readEnd.raw, into: $0) }) {
                received += buffer[0..<n]
            }
            if received.count >= 3 {
                loop.unwatch(pipe.readEnd.raw)
                loop.stopping = true
            }
        }
        try FileIO.writeAll(pipe.writeEnd.raw, [1, 2, 3])
        try loop.run()
        #expect(received == [1, 2, 3])
        #expect(!loop.isWatching(pipe.readEnd.raw))
    }

    @Test(.timeLimit(.minutes(1)))
    func anotherThreadWakesTheLoop() async throws {
        let loop = try EventLoop()
        var woken = 0
        loop.onWake {
            woken += 1
            loop.stopping = true
        }
        let waker = loop.waker
        let thread = Task.detached { waker.wake() }
        try loop.run()
        await thread.value
        #expect(woken == 1)
    }

    /// Two descriptors ready in one batch: the first handler to run unwatches the other and
    /// puts an empty pipe under the same number, watched by a new handler. The event still
    /// queued for the old descriptor must not reach the new handler (the new pipe is never
    /// readable, so any call is that stale event).
    @Test(.timeLimit(.minutes(1)))
    func aStaleEventForAReusedDescriptorNumberIsDropped() throws {
        let loop = try EventLoop()
        let first = try Pipe(nonBlocking: true), second = try Pipe(nonBlocking: true), empty = try Pipe(nonBlocking: true)
        try FileIO.writeAll(first.writeEnd.raw, [1])
        try FileIO.writeAll(second.writeEnd.raw, [1])
        let emptyRead = empty.readEnd.raw
        var swapped = false
        var staleDeliveries = 0
        var failure: Errno?
        func takeOver(_ other: CInt) -> EventLoop.Handler {
            return { _ in
                guard !swapped else { return }
                swapped = true
                loop.unwatch(other)
                // dup2 closes the old descriptor and reuses its number for the empty pipe.
                guard dup2(emptyRead, other) == other else { return failure = Errno(rawValue: errno) }
                do throws(Errno) { try loop.watch(other, events: EventLoop.readable) { _ in staleDeliveries += 1 } } catch { failure = error }
                loop.soon { loop.stopping = true }
            }
        }
        let firstRead = first.readEnd.raw, secondRead = second.readEnd.raw
        try loop.watch(firstRead, events: EventLoop.readable, takeOver(secondRead))
        try loop.watch(secondRead, events: EventLoop.readable, takeOver(firstRead))
        try loop.run()
        #expect(failure == nil)
        #expect(swapped)
        #expect(staleDeliveries == 0)
    }

    @Test func epollRefusalsAreThrownAndLeaveExistingWatchesAlone() throws {
        let loop = try EventLoop()
        let pipe = try Pipe(nonBlocking: true)
        let readEnd = pipe.readEnd.raw
        var calls = 0
        try loop.watch(readEnd, events: EventLoop.readable) { _ in
            calls += 1
            loop.stopping = true
        }
        // Watching it twice fails without replacing the handler that works.
        #expect(throws: Errno(rawValue: EEXIST)) { try loop.watch(readEnd, events: EventLoop.readable) { _ in } }
        // Nothing to modify for a descriptor that is not watched.
        #expect(throws: Errno(rawValue: ENOENT)) { try loop.modify(pipe.writeEnd.raw, events: EventLoop.writable) }
        // epoll cannot watch a regular file.
        let file = open("/proc/self/stat", O_RDONLY | O_CLOEXEC)
        defer { close(file) }
        #expect(throws: Errno(rawValue: EPERM)) { try loop.watch(file, events: EventLoop.readable) { _ in } }
        #expect(!loop.isWatching(file))
        try FileIO.writeAll(pipe.writeEnd.raw, [1])
        try loop.run()
        #expect(calls == 1)
    }

    @Test func unwatchingADescriptorClosedTooEarlySaysSo() throws {
        let loop = try EventLoop()
        var fds: [CInt] = [-1, -1]
        #expect(pipe(&fds) == 0)
        defer { close(fds[1]) }
        try loop.watch(fds[0], events: EventLoop.readable) { _ in }
        close(fds[0])
        #expect(loop.unwatch(fds[0]) == Errno(rawValue: EBADF))
        #expect(!loop.isWatching(fds[0]))
        #expect(loop.unwatch(fds[0]) == nil)  // nothing left to unwatch
    }

    @Test func deferredWorkRunsBeforeTheNextWait() throws {
        let loop = try EventLoop()
        var order: [String] = []
        loop.soon {
            order.append("first")
            loop.soon { order.append("nested"); loop.stopping = true }
        }
        try loop.run()
        #expect(order == ["first", "nested"])
    }
}

@Suite struct SocketTests {
    @Test(.timeLimit(.minutes(1)))
    func unixListenConnectAcceptCarryBytes() throws {
        let path = "/tmp/tether-posix-test-\(getpid()).sock"
        defer { unlink(path) }
        let listener = try Socket.listen(.unix(path: path))
        // A second listen on the same path replaces the stale socket file rather than failing.
        let client = try Socket.connect(.unix(path: path))
        guard let accepted = try Socket.accept(listener.raw, nonBlocking: false) else {
            Issue.record("accept found no connection")
            return
        }
        try FileIO.writeAll(client.raw, Array("ping".utf8))
        var buffer = [UInt8](repeating: 0, count: 4)
        let result = try buffer.withUnsafeMutableBytes { try FileIO.read(accepted.raw, into: $0) }
        #expect(result == .bytes(4))
        #expect(buffer == Array("ping".utf8))
        #expect(Socket.isListening(listener.raw))
        #expect(!Socket.isListening(accepted.raw))
    }

    @Test func aStaleSocketFileIsReplacedButOtherFilesAreNot() throws {
        let path = "/tmp/tether-posix-stale-\(getpid()).sock"
        defer { unlink(path) }
        do { _ = try Socket.listen(.unix(path: path)) }
        _ = try Socket.listen(.unix(path: path))  // the first listener is closed; its file remains
        let file = "/tmp/tether-posix-file-\(getpid())"
        let fd = open(file, O_CREAT | O_WRONLY, 0o600)
        close(fd)
        defer { unlink(file) }
        #expect(throws: SocketError.system(operation: "bind", address: "unix:" + file, Errno(rawValue: EADDRINUSE))) {
            _ = try Socket.listen(.unix(path: file))
        }
    }

    @Test func connectingToNothingNamesTheOperationAndErrno() {
        #expect(throws: SocketError.system(operation: "connect", address: "unix:/nonexistent/x.sock", Errno(rawValue: ENOENT))) {
            _ = try Socket.connect(.unix(path: "/nonexistent/x.sock"))
        }
    }
}
