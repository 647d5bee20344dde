#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys

/// Copies bytes both ways between two connected stream sockets on an `EventLoop`, for as
/// long as either direction has something to carry: a tunnelled TCP connection (the relay
/// between a host client and the agent's tunnel socket; the agent between that socket and the
/// guest's service).
///
/// Flow control: each direction has one bounded buffer (a pipe the bytes are spliced through,
/// or memory of the process); the bridge reads a side only while the buffer it fills has room, so a slow reader stops its writer through the kernel's socket
/// buffers, and nothing is ever dropped. Half-close: when one side's reading half ends (EOF),
/// the bridge writes out what it holds for the other side and then shuts that side's writing
/// half (shutdown(2) SHUT_WR); the other direction goes on until it ends too. An error on
/// either side (a reset, EPIPE) ends both at once.
///
/// Owns both descriptors and the two buffers; lives on the loop's thread; ends by calling
/// `onEnd` once, after it closed both descriptors (or when `close()` is called, without it).
public final class StreamBridge {
    public enum Ending: Equatable, Sendable {
        /// Both directions reached EOF and were delivered.
        case finished
        /// A read or write failed; the operation and errno say where.
        case failed(operation: String, Errno)
    }

    /// One direction: bytes taken from `source`, waiting to be given to `sink`. They wait in
    /// a pipe, moved with splice(2) (the kernel passes pages from one socket to the other
    /// without copying them through the process), or, when no pipe could be made (out of
    /// descriptors), in a buffer of the process, with read(2) and write(2).
    private struct Direction {
        let source: CInt
        let sink: CInt
        var pipeRead: CInt = -1
        var pipeWrite: CInt = -1
        var buffer: UnsafeMutableRawBufferPointer?
        var start = 0
        var end = 0
        /// Bytes the pipe (or the buffer) holds at most, and holds now.
        var capacity: Int
        var held = 0
        /// The source said EOF; once everything held is given, the sink's writing half is shut.
        var sourceEnded = false
        var sinkShut = false
        var bytesCarried: UInt64 = 0
        /// The pipe refused more although it holds fewer bytes than its size: a pipe counts
        /// slots (one per piece of a socket buffer spliced in), not bytes. No reading until
        /// the sink took some, or the loop would spin on a readable source.
        var pipeFull = false

        init(source: CInt, sink: CInt, capacity: Int) {
            self.source = source
            self.sink = sink
            self.capacity = capacity
            do {
                let pipe = try Pipe(nonBlocking: true)
                let size = csys_set_pipe_size(pipe.writeEnd.raw, CInt(capacity))
                // Without the size asked for (above fs.pipe-max-size), a pipe holds 16 pages.
                self.capacity = size > 0 ? Int(size) : 16 * 4096
                pipeWrite = pipe.writeEnd.release()
                pipeRead = pipe.readEnd.release()
            } catch {
                buffer = .allocate(byteCount: capacity, alignment: 16)
            }
        }

        var hasRoom: Bool { !sourceEnded && (buffer == nil ? held < capacity && !pipeFull : end < capacity) }
        var hasPending: Bool { held > 0 }
        var isDone: Bool { sinkShut }

        func release() {
            if pipeRead >= 0 { _ = Glibc.close(pipeRead) }
            if pipeWrite >= 0 { _ = Glibc.close(pipeWrite) }
            buffer?.deallocate()
        }
    }

    /// Rounds of moving bytes one event may take before the loop serves other descriptors.
    /// One: a round moves up to a buffer each way, and an exec's frames crossing a loop that
    /// carries a busy tunnel waited behind every round (four made exec 1.9-2.1x slower under
    /// a streaming tunnel, one 1.5-1.6x), while the tunnel's own pace did not change.
    private static let roundsPerTurn = 1

    private let loop: EventLoop
    private var directions: [Direction]
    private var sides: [CInt]
    /// The events each side is registered for now; nil once it is no longer watched.
    private var interest: [CInt: UInt32] = [:]
    private var ended = false
    public var onEnd: (Ending) -> Void = { _ in }

    /// Bytes carried from the first side to the second, and back.
    public var bytesForward: UInt64 { directions[0].bytesCarried }
    public var bytesBackward: UInt64 { directions[1].bytesCarried }

    /// Takes both sockets (made nonblocking here). `bufferBytes` bounds each direction.
    public init(loop: EventLoop, _ first: consuming OwnedFD, _ second: consuming OwnedFD, bufferBytes: Int = 64 << 10) {
        self.loop = loop
        let a = first.release()
        let b = second.release()
        sides = [a, b]
        directions = [
            Direction(source: a, sink: b, capacity: bufferBytes),
            Direction(source: b, sink: a, capacity: bufferBytes),
        ]
    }

    deinit {
        closeDescriptors()
        for direction in directions { direction.release() }
    }

    /// Starts watching both sides; bytes a side already holds are carried at once.
    public func start(initialForward: [UInt8] = []) throws(Errno) {
        for fd in sides {
            try FileIO.setNonBlocking(fd)
            try loop.watch(fd, events: EventLoop.readable) { [unowned self] events in sideReady(fd, events: events) }
            interest[fd] = EventLoop.readable
        }
        if !initialForward.isEmpty { seed(initialForward) }
        pump()
    }

    /// Ends both sides now, without `onEnd` (the owner is going away).
    public func close() {
        ended = true
        closeDescriptors()
    }

    /// Bytes that arrived with a preamble, before the bridge took the socket: they go first.
    /// A few KiB at most (what followed a preamble), so the empty pipe or buffer takes them.
    private func seed(_ bytes: [UInt8]) {
        if let buffer = directions[0].buffer {
            let count = min(bytes.count, buffer.count)
            bytes.withUnsafeBytes { raw in buffer.baseAddress!.copyMemory(from: raw.baseAddress!, byteCount: count) }
            directions[0].end = count
            directions[0].held = count
        } else {
            let written = bytes.withUnsafeBytes { raw in try? FileIO.write(directions[0].pipeWrite, raw) }
            if case .wrote(let count)? = written { directions[0].held = count }
        }
    }

    private func sideReady(_ fd: CInt, events: UInt32) {
        guard !ended else { return }
        if events & EventLoop.error != 0, let failure = NonBlockingConnect.result(of: fd) {
            return finish(.failed(operation: "poll", failure))
        }
        let progressed = pump()
        // EPOLLHUP keeps being reported whatever the interest; a side that hung up and has
        // nothing to do now is taken out of epoll, and the other side's events drive it.
        if !progressed, events & EventLoop.hangUp != 0, !ended, interest[fd] != nil {
            loop.unwatch(fd)
            interest[fd] = nil
        }
    }

    /// Moves bytes in both directions until nothing moves; then sets each side's interest.
    @discardableResult
    private func pump() -> Bool {
        var progressed = false
        var moved = true
        var rounds = 0
        while moved && !ended {
            if rounds == Self.roundsPerTurn {
                // Still moving: let the loop's other descriptors (exec traffic, other tunnels)
                // have their turn, then carry on.
                loop.afterReadyEvents { [weak self] in self?.pump() }
                break
            }
            rounds += 1
            moved = false
            for index in directions.indices {
                do throws(BridgeFailure) {
                    if try step(index) { moved = true }
                } catch {
                    finish(.failed(operation: error.operation, error.errno))
                    return true
                }
            }
            progressed = progressed || moved
        }
        guard !ended else { return true }
        if directions.allSatisfy(\.isDone) {
            finish(.finished)
            return true
        }
        updateInterest()
        return progressed
    }

    private struct BridgeFailure: Error {
        let operation: String
        let errno: Errno
    }

    /// One take from the source and one give to the sink; true when a byte moved or a state
    /// changed.
    private func step(_ index: Int) throws(BridgeFailure) -> Bool {
        var changed = false
        if directions[index].hasRoom {
            switch try take(index) {
            case .bytes(let count):
                directions[index].held += count
                changed = true
            case .endOfFile:
                directions[index].sourceEnded = true
                changed = true
            case .wouldBlock:
                break
            }
        }
        if directions[index].hasPending, let count = try give(index) {
            directions[index].held -= count
            directions[index].bytesCarried += UInt64(count)
            changed = true
        }
        if directions[index].sourceEnded, !directions[index].hasPending, !directions[index].sinkShut {
            directions[index].sinkShut = true
            // The peer reads EOF after the last byte; its own sending goes on (half-close).
            // ENOTCONN: the sink is gone already, which its own direction reports.
            _ = Glibc.shutdown(directions[index].sink, CInt(SHUT_WR))
            changed = true
        }
        return changed
    }

    private func take(_ index: Int) throws(BridgeFailure) -> ReadResult {
        let direction = directions[index]
        guard let buffer = direction.buffer else {
            let result = csys_splice(direction.source, direction.pipeWrite, UInt(direction.capacity - direction.held))
            if result > 0 { return .bytes(Int(result)) }
            if result == 0 { return .endOfFile }
            if result == -Int(EAGAIN) {
                // Nothing to read, or no free slot in a pipe that holds something: the latter
                // clears once the sink takes from the pipe.
                if direction.held > 0 { directions[index].pipeFull = true }
                return .wouldBlock
            }
            throw BridgeFailure(operation: "splice from the socket", errno: Errno(rawValue: CInt(-result)))
        }
        let room = UnsafeMutableRawBufferPointer(rebasing: buffer[direction.end...])
        do {
            let result = try FileIO.read(direction.source, into: room)
            if case .bytes(let count) = result { directions[index].end += count }
            return result
        } catch {
            throw BridgeFailure(operation: "read", errno: error)
        }
    }

    /// The bytes given to the sink, nil when it takes none now.
    private func give(_ index: Int) throws(BridgeFailure) -> Int? {
        let direction = directions[index]
        guard let buffer = direction.buffer else {
            let result = csys_splice(direction.pipeRead, direction.sink, UInt(direction.held))
            if result > 0 {
                directions[index].pipeFull = false
                return Int(result)
            }
            if result == -Int(EAGAIN) || result == 0 { return nil }
            throw BridgeFailure(operation: "splice to the socket", errno: Errno(rawValue: CInt(-result)))
        }
        let pending = UnsafeRawBufferPointer(rebasing: buffer[direction.start..<direction.end])
        do {
            guard case .wrote(let count) = try FileIO.write(direction.sink, pending) else { return nil }
            directions[index].start += count
            if directions[index].start == directions[index].end {
                directions[index].start = 0
                directions[index].end = 0
            }
            return count
        } catch {
            throw BridgeFailure(operation: "write", errno: error)
        }
    }

    /// Readable while the buffer it fills has room; writable while the buffer it drains holds
    /// bytes. A side with neither is still watched for hang-ups and errors.
    private func updateInterest() {
        for (index, fd) in sides.enumerated() {
            guard let current = interest[fd] else { continue }
            let outgoing = directions[index]
            let incoming = directions[1 - index]
            var wanted: UInt32 = 0
            if outgoing.hasRoom { wanted |= EventLoop.readable }
            if incoming.hasPending { wanted |= EventLoop.writable }
            guard wanted != current else { continue }
            do {
                try loop.modify(fd, events: wanted)
                interest[fd] = wanted
            } catch {
                return finish(.failed(operation: "epoll_ctl", error))
            }
        }
    }

    private func finish(_ ending: Ending) {
        guard !ended else { return }
        ended = true
        closeDescriptors()
        onEnd(ending)
    }

    private func closeDescriptors() {
        for fd in sides {
            if interest.removeValue(forKey: fd) != nil { loop.unwatch(fd) }
            _ = Glibc.close(fd)
        }
        sides = []
    }
}
