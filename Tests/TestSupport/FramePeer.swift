#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherPosix
import TetherProtocol

/// Why a `FramePeer` read gave up.
public enum FramePeerError: Error, Equatable, CustomStringConvertible {
    case timedOut(waitingFor: String)
    case closed(waitingFor: String)
    case unexpected(String)

    public var description: String {
        switch self {
        case .timedOut(let what): "timed out waiting for \(what)"
        case .closed(let what): "connection closed while waiting for \(what)"
        case .unexpected(let what): what
        }
    }
}

/// One end of a frame connection, driven by hand from a test: send frames, read frames
/// with a deadline (poll(2)), so a test that goes wrong fails instead of hanging.
///
/// Owns its descriptor (closed on `close()` or deinit). For one thread at a time.
public final class FramePeer: @unchecked Sendable {
    public private(set) var fd: CInt
    private var decoder = FrameDecoder()
    /// Answer `ping` with `pong` instead of returning it (a responsive agent or client).
    public var answersPings = true
    /// Frames read but put back by `receive(where:)` skipping over them.
    private var held: [Frame] = []

    public init(adopting fd: consuming OwnedFD) {
        self.fd = fd.release()
    }

    /// Connects to a unix socket.
    public static func connect(_ path: String) throws -> FramePeer {
        FramePeer(adopting: try Socket.connect(.unix(path: path)))
    }

    deinit { close() }

    public func close() {
        if fd >= 0 { _ = Glibc.close(fd) }
        fd = -1
    }

    /// Half-close: the peer reads end-of-stream, this side can still read.
    public func shutdownWrite() { _ = shutdown(fd, CInt(SHUT_WR)) }

    public func send(_ frame: Frame) throws {
        var encoder = FrameEncoder()
        encoder.append(frame)
        try sendRaw(encoder.withPendingBytes { Array($0) })
    }

    public func send<M: Message>(id: UInt32, flags: FrameFlags = [], _ message: M) throws {
        try send(Frame(id: id, flags: flags, kind: M.kind, payload: message.cborBytes))
    }

    public func sendRaw(_ bytes: [UInt8]) throws {
        try FileIO.writeAll(fd, bytes)
    }

    /// The next frame, waiting up to `timeout`.
    public func receive(timeout: Duration = .seconds(20), _ what: String = "a frame") throws -> Frame {
        if !held.isEmpty { return held.removeFirst() }
        let deadline = Clock.monotonicNs() + UInt64(timeout.components.seconds) * 1_000_000_000
            + UInt64(timeout.components.attoseconds / 1_000_000_000)
        while true {
            if let frame = try decoder.next() {
                if frame.id == 0 && frame.kind == .ping && answersPings {
                    if let ping = try? frame.decode(Ping.self) { try send(id: 0, Pong(nonce: ping.nonce)) }
                    continue
                }
                return frame
            }
            let now = Clock.monotonicNs()
            guard now < deadline else { throw FramePeerError.timedOut(waitingFor: what) }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let waitMs = CInt(min(1000, (deadline - now) / 1_000_000 + 1))
            let ready = poll(&pfd, 1, waitMs)
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 { continue }
            var buffer = [UInt8](repeating: 0, count: 256 << 10)
            let n = Glibc.read(fd, &buffer, buffer.count)
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            if n <= 0 { throw FramePeerError.closed(waitingFor: what) }
            decoder.append(buffer[0..<n])
        }
    }

    /// The first frame matching `predicate`; frames before it are kept for later reads.
    public func receive(timeout: Duration = .seconds(20), _ what: String = "a frame",
                        where predicate: (Frame) -> Bool) throws -> Frame {
        var skipped: [Frame] = []
        defer { held = skipped + held }
        while true {
            let frame = try receive(timeout: timeout, what)
            if predicate(frame) { return frame }
            skipped.append(frame)
        }
    }

    /// A frame of `kind` (on `id` if given), skipping others (kept for later).
    public func expect(_ kind: FrameKind, id: UInt32? = nil, timeout: Duration = .seconds(20)) throws -> Frame {
        try receive(timeout: timeout, "\(kind)" + (id.map { " on id \($0)" } ?? "")) { frame in
            frame.kind == kind && (id == nil || frame.id == id)
        }
    }

    /// Whether the peer closed (end of stream) within `timeout`, discarding frames before it.
    public func waitForClose(timeout: Duration = .seconds(20)) -> Bool {
        while true {
            do { _ = try receive(timeout: timeout, "end of stream") } catch let error as FramePeerError {
                if case .closed = error { return true }
                return false
            } catch {
                return true
            }
        }
    }

    /// Data payload bytes of `kind` on `id`, until `count` bytes arrived.
    public func readData(_ kind: FrameKind, id: UInt32, count: Int, ack: Bool = false, timeout: Duration = .seconds(30)) throws -> [UInt8] {
        var bytes: [UInt8] = []
        var unacked = 0
        while bytes.count < count {
            let frame = try expect(kind, id: id, timeout: timeout)
            bytes += frame.payload
            unacked += frame.payload.count
            if ack && unacked >= FlowControl.ackThresholdBytes {
                try send(id: id, Ack(bytes: UInt64(unacked)))
                unacked = 0
            }
        }
        return bytes
    }
}
