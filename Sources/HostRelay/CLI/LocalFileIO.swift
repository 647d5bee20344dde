#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization
import TetherClient
import TetherPosix

/// Chunks handed between a dedicated thread that does blocking local I/O (a file, a pipe, a
/// terminal: `tether cp`'s local side) and the task that moves them to or from the sandbox.
/// The queue holds at most `capacity` chunks; the thread sleeps on a `WakeGate` while it
/// cannot go on, the task on a continuation. Holds no descriptor (the caller's thread does).
final class ChunkHandOff: Sendable {
    static let capacity = 8
    struct State {
        var chunks: [[UInt8]] = []
        /// No more chunks will be put (end of input, or the writer is done).
        var ended = false
        /// Why the thread stopped early.
        var failure: FileError?
        /// The task gave up: the thread stops at its next step.
        var cancelled = false
        var threadDone = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    let state = Mutex(State())
    let gate: WakeGate

    init() throws(Errno) { gate = try WakeGate() }

    func resumeWaiter() { state.withLock { s in defer { s.waiter = nil }; return s.waiter }?.resume() }

    /// Suspends the task until `ready` holds (checked under the lock). The thread resumes the
    /// waiter whenever something changed, not only when `ready` became true (a wait for the
    /// thread's end is woken by each chunk it takes), so the condition is checked again.
    func wait(until ready: @escaping @Sendable (State) -> Bool) async {
        while !state.withLock({ ready($0) }) {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if ready(s) { return true }
                    s.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        }
    }

    func cancel() {
        state.withLock { $0.cancelled = true }
        gate.wake()
    }
}

/// Bytes made on a dedicated thread (read from a descriptor, or a tar stream of a local
/// tree), as an async sequence of chunks.
final class LocalSource: AsyncSequence, Sendable {
    typealias Element = [UInt8]
    static let chunkBytes = 256 << 10
    private let handOff: ChunkHandOff

    /// Runs `produce` on its own thread; it hands chunks to `emit`, which waits while the
    /// queue is full and returns false once the reader gave up. Its error ends the sequence.
    init(named name: String, _ produce: @escaping @Sendable (_ emit: ([UInt8]) -> Bool) -> FileError?) throws(Errno) {
        let handOff = try ChunkHandOff()
        self.handOff = handOff
        DedicatedThread.start(named: name) {
            let failure = produce { chunk in
                while true {
                    let (full, cancelled) = handOff.state.withLock { ($0.chunks.count >= ChunkHandOff.capacity, $0.cancelled) }
                    if cancelled { return false }
                    if !full { break }
                    handOff.gate.sleep()
                }
                handOff.state.withLock { $0.chunks.append(chunk) }
                handOff.resumeWaiter()
                return true
            }
            handOff.state.withLock {
                $0.ended = true
                $0.failure = failure
            }
            handOff.resumeWaiter()
        }
    }

    /// A descriptor read to its end (closed afterwards when `closeWhenDone`; stdin is not).
    convenience init(fd: CInt, closeWhenDone: Bool, label: String) throws(Errno) {
        try self.init(named: "tether-cp-read") { emit in
            defer { if closeWhenDone { _ = Glibc.close(fd) } }
            var buffer = [UInt8](repeating: 0, count: Self.chunkBytes)
            while true {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n < 0 {
                    if errno == EINTR { continue }
                    return FileCommands.local(Errno(rawValue: errno), op: "read", path: label)
                }
                if n == 0 || !emit(Array(buffer[0..<n])) { return nil }
            }
        }
    }

    /// The next chunk; nil at the end. The producer's failure throws.
    func next() async throws(FileError) -> [UInt8]? {
        while true {
            let taken = handOff.state.withLock { s -> (chunk: [UInt8]?, ended: Bool, failure: FileError?) in
                if !s.chunks.isEmpty { return (s.chunks.removeFirst(), false, nil) }
                return (nil, s.ended, s.failure)
            }
            if let chunk = taken.chunk {
                handOff.gate.wake()
                return chunk
            }
            if let failure = taken.failure { throw failure }
            if taken.ended { return nil }
            await handOff.wait { !$0.chunks.isEmpty || $0.ended }
        }
    }

    /// The producer's failure, once the sequence ended with one.
    var failure: FileError? { handOff.state.withLock { $0.failure } }

    func cancel() { handOff.cancel() }

    struct AsyncIterator: AsyncIteratorProtocol {
        let source: LocalSource
        mutating func next() async throws -> [UInt8]? { try await source.next() }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(source: self) }
}

/// Chunks consumed on a dedicated thread (written to a descriptor, or unpacked as a tar
/// stream into a local directory).
final class LocalSink: Sendable {
    private let handOff: ChunkHandOff

    /// Runs `consume` for each chunk and `finish` after the last, on its own thread.
    init(named name: String, consume: @escaping @Sendable ([UInt8]) -> FileError?, finish: @escaping @Sendable () -> FileError?) throws(Errno) {
        let handOff = try ChunkHandOff()
        self.handOff = handOff
        DedicatedThread.start(named: name) {
            var failure: FileError?
            while true {
                let (chunk, ended, cancelled) = handOff.state.withLock { s -> ([UInt8]?, Bool, Bool) in
                    (s.chunks.isEmpty ? nil : s.chunks.removeFirst(), s.ended, s.cancelled)
                }
                if cancelled { break }
                guard let chunk else {
                    if ended {
                        failure = finish()
                        break
                    }
                    handOff.gate.sleep()
                    continue
                }
                handOff.resumeWaiter()
                if let error = consume(chunk) {
                    failure = error
                    break
                }
            }
            handOff.state.withLock {
                $0.failure = failure
                $0.threadDone = true
            }
            handOff.resumeWaiter()
        }
    }

    /// Bytes to a descriptor, left open. A regular file's pages are handed to its disk as
    /// they are written, so that the caller's fsync has little left to do.
    convenience init(fd: CInt, label: String) throws(Errno) {
        let writeback = Mutex(FileIO.WritebackPacer(fd: fd))   // used by the writer thread alone
        try self.init(named: "tether-cp-write", consume: { chunk in
            do throws(Errno) { try FileIO.writeAll(fd, chunk) } catch { return FileCommands.local(error, op: "write", path: label) }
            writeback.withLock { $0.wrote(chunk.count) }
            return nil
        }, finish: { nil })
    }

    /// Queues a chunk, waiting while the queue is full. The consumer's failure throws.
    func write(_ chunk: [UInt8]) async throws(FileError) {
        while true {
            let outcome = handOff.state.withLock { s -> (queued: Bool, failure: FileError?, done: Bool) in
                if let failure = s.failure { return (false, failure, true) }
                if s.threadDone { return (false, nil, true) }
                guard s.chunks.count < ChunkHandOff.capacity else { return (false, nil, false) }
                s.chunks.append(chunk)
                return (true, nil, false)
            }
            if let failure = outcome.failure { throw failure }
            if outcome.done { throw FileError.local(.transferAborted, op: "write", path: "", "the local writer stopped") }
            if outcome.queued {
                handOff.gate.wake()
                return
            }
            await handOff.wait { $0.chunks.count < ChunkHandOff.capacity || $0.threadDone }
        }
    }

    /// Waits until every chunk is consumed and `finish` ran.
    func finish() async throws(FileError) {
        handOff.state.withLock { $0.ended = true }
        handOff.gate.wake()
        await handOff.wait { $0.threadDone }
        if let failure = handOff.state.withLock({ $0.failure }) { throw failure }
    }

    func cancel() { handOff.cancel() }
}
