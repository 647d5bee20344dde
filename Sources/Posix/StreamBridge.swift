#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Copies bytes both ways between two connected stream sockets on an `EventLoop`, for as
/// long as either direction has something to carry: a tunnelled TCP connection (the relay
/// between a host client and the agent's tunnel socket; the agent between that socket and the
/// guest's service).
///
/// Flow control: each direction has one bounded buffer; the bridge reads a side only while the
/// buffer it fills has room, so a slow reader stops its writer through the kernel's socket
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

    /// One direction: bytes read from `source`, waiting to be written to `sink`.
    private struct Direction {
        let source: CInt
        let sink: CInt
        var buffer: UnsafeMutableRawBufferPointer
        var start = 0
        var end = 0
        /// The source said EOF; once the buffer is written out, the sink's writing half is shut.
        var sourceEnded = false
        var sinkShut = false
        var bytesCarried: UInt64 = 0

        var hasRoom: Bool { !sourceEnded && end < buffer.count }
        var hasPending: Bool { start < end }
        var isDone: Bool { sinkShut }
    }

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
            Direction(source: a, sink: b, buffer: .allocate(byteCount: bufferBytes, alignment: 16)),
            Direction(source: b, sink: a, buffer: .allocate(byteCount: bufferBytes, alignment: 16)),
        ]
    }

    deinit {
        closeDescriptors()
        for direction in directions { direction.buffer.deallocate() }
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
    private func seed(_ bytes: [UInt8]) {
        let count = min(bytes.count, directions[0].buffer.count)
        bytes.withUnsafeBytes { raw in
            directions[0].buffer.baseAddress!.copyMemory(from: raw.baseAddress!, byteCount: count)
        }
        directions[0].end = count
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
        while moved && !ended {
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

    /// One read into and one write out of a direction's buffer; true when a byte moved or a
    /// state changed.
    private func step(_ index: Int) throws(BridgeFailure) -> Bool {
        var changed = false
        if directions[index].hasRoom {
            let direction = directions[index]
            let room = UnsafeMutableRawBufferPointer(rebasing: direction.buffer[direction.end...])
            do {
                switch try FileIO.read(direction.source, into: room) {
                case .bytes(let count):
                    directions[index].end += count
                    changed = true
                case .endOfFile:
                    directions[index].sourceEnded = true
                    changed = true
                case .wouldBlock:
                    break
                }
            } catch {
                throw BridgeFailure(operation: "read", errno: error)
            }
        }
        if directions[index].hasPending {
            let direction = directions[index]
            let pending = UnsafeRawBufferPointer(rebasing: direction.buffer[direction.start..<direction.end])
            do {
                switch try FileIO.write(direction.sink, pending) {
                case .wrote(let count):
                    directions[index].start += count
                    directions[index].bytesCarried += UInt64(count)
                    if directions[index].start == directions[index].end {
                        directions[index].start = 0
                        directions[index].end = 0
                    }
                    changed = true
                case .wouldBlock:
                    break
                }
            } catch {
                throw BridgeFailure(operation: "write", errno: error)
            }
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
