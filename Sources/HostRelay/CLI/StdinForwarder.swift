#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization
import TetherClient
import TetherPosix

/// Copies local stdin to a session's stdin (`exec -i`, and every terminal session). A dedicated
/// thread reads (read(2) of a terminal or a pipe blocks); one Task sends (the session's stdin
/// window may make it wait). Between them a queue of at most `limit` bytes: while it is full
/// the thread sleeps, so a session that takes its input slowly slows the reader instead of
/// filling memory. The thread never waits for async work; it waits on stdin, on `stopGate`
/// and, with a full queue, on `roomGate`.
///
/// With detach keys (a terminal session) the keys are watched for and not forwarded; `stop()`
/// (the session ended) makes the thread stop reading at once, so what is typed next stays in
/// the terminal for the local shell. Owns: its thread and its Task, both ended by `stop()`, by
/// the session refusing input, or by EOF on stdin.
final class StdinForwarder: Sendable {
    private enum Item {
        case bytes([UInt8])
        /// Stdin ended (EOF or an error) or the detach keys were typed: `close` says whether
        /// the session's stdin is closed too.
        case end(close: Bool)
    }

    private struct Queue {
        var items: [Item] = []
        var bytes = 0
        var stopped = false
        var waiter: CheckedContinuation<Item?, Never>?
    }

    private let queue = Mutex(Queue())
    private let roomGate: WakeGate
    private let stopGate: WakeGate
    private let limit: Int

    /// `keys`: watch for the detach keys (`onDetach` runs on the reading thread when they are
    /// typed). `closeOnEOF`: EOF on local stdin closes the session's stdin (for a pty: the
    /// agent types the EOF character).
    init(_ writer: StdinWriter, keys: DetachKeys? = nil, closeOnEOF: Bool = true, limit: Int = 256 << 10,
         onDetach: @escaping @Sendable () -> Void = {}) throws(Errno) {
        roomGate = try WakeGate()
        stopGate = try WakeGate()
        self.limit = limit
        DedicatedThread.start(named: "tether-stdin") { [self] in
            read(keys: keys, closeOnEOF: closeOnEOF, onDetach: onDetach)
        }
        Task { [self] in await send(to: writer) }
    }

    /// Stops reading local stdin and sending; what is queued is dropped.
    func stop() {
        let waiter = queue.withLock { queue -> CheckedContinuation<Item?, Never>? in
            queue.stopped = true
            queue.items = []
            defer { queue.waiter = nil }
            return queue.waiter
        }
        stopGate.wake()
        roomGate.wake()
        waiter?.resume(returning: nil)
    }

    // MARK: the reading thread

    private func read(keys: DetachKeys?, closeOnEOF: Bool, onDetach: @Sendable () -> Void) {
        var matcher = keys.map(DetachMatcher.init)
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while waitForInput() {
            let count = buffer.withUnsafeMutableBytes { raw in Result { () throws(Errno) in try FileIO.read(0, into: raw) } }
            guard case .success(.bytes(let n)) = count, n > 0 else {
                // EOF, an error, or a nonblocking stdin with nothing there (which a blocking
                // reader cannot wait on): the input is over.
                put(.end(close: closeOnEOF))
                return
            }
            guard var detector = matcher else {
                put(.bytes(Array(buffer[0..<n])))
                continue
            }
            let (forward, detach) = detector.feed(buffer[0..<n])
            matcher = detector
            if !forward.isEmpty { put(.bytes(Array(forward))) }
            if detach {
                put(.end(close: false))
                onDetach()
                return
            }
        }
    }

    /// Waits until stdin has something (true) or `stop()` was called (false); with a full
    /// queue, first until the Task has sent some of it.
    private func waitForInput() -> Bool {
        while true {
            let (stopped, full) = queue.withLock { ($0.stopped, $0.bytes >= limit) }
            if stopped { return false }
            if full {
                roomGate.sleep()
                continue
            }
            var ready = [pollfd(fd: 0, events: Int16(POLLIN), revents: 0),
                         pollfd(fd: stopGate.descriptor, events: Int16(POLLIN), revents: 0)]
            let polled = poll(&ready, 2, -1)
            if polled < 0 && errno == EINTR { continue }
            if ready[1].revents != 0 { return false }
            return true   // readable, hung up or invalid: the read says which
        }
    }

    private func put(_ item: Item) {
        let waiter = queue.withLock { queue -> CheckedContinuation<Item?, Never>? in
            guard !queue.stopped else { return nil }
            // Counted until the Task has sent them, whichever way they go to it.
            if case .bytes(let bytes) = item { queue.bytes += bytes.count }
            if let waiter = queue.waiter {
                queue.waiter = nil
                return waiter
            }
            queue.items.append(item)
            return nil
        }
        waiter?.resume(returning: item)
    }

    // MARK: the sending task

    private func send(to writer: StdinWriter) async {
        while let item = await next() {
            switch item {
            case .bytes(let bytes):
                do { try await writer.write(bytes) } catch {
                    // The session takes no more input (it ended, or closed its stdin).
                    stop()
                    return
                }
                queue.withLock { $0.bytes -= bytes.count }
                roomGate.wake()
            case .end(let close):
                if close { try? writer.close() }
                return
            }
        }
    }

    private func next() async -> Item? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Item?, Never>) in
            let item = queue.withLock { queue -> Item?? in
                if queue.stopped { return .some(nil) }
                if !queue.items.isEmpty { return .some(queue.items.removeFirst()) }
                queue.waiter = continuation
                return .none
            }
            if let item { continuation.resume(returning: item) }
        }
    }
}
