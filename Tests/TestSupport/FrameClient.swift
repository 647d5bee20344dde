#if canImport(Glibc)
import Glibc
#endif
import TetherPosix
import TetherProtocol

/// A failure of the test client (not of the code under test): a deadline passed, the peer
/// closed, an unexpected frame.
public struct ClientError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A blocking client for the wire protocol, for tests: writes frames, reads them with a
/// deadline (poll(2)), and keeps frames of other ids aside so tests can run many sessions on
/// one connection. Owns its socket and closes it on `close()` or deinit. One thread at a time.
public final class FrameClient {
    public private(set) var fd: CInt
    private var decoder = FrameDecoder()
    private var stash: [UInt32: [Frame]] = [:]
    /// Every frame received, in order (for ordering checks across ids).
    public private(set) var received: [(id: UInt32, kind: FrameKind)] = []
    public var recordOrder = false

    public init(adopting fd: CInt) { self.fd = fd }
    deinit { close() }

    public func close() {
        if fd >= 0 { _ = Glibc.close(fd) }
        fd = -1
    }

    /// Shuts down the writing half (the agent reads EOF) and keeps reading possible.
    public func shutdownWrite() { _ = Glibc.shutdown(fd, CInt(SHUT_WR)) }

    // MARK: sending

    public func send(raw bytes: [UInt8]) throws {
        try FileIO.writeAll(fd, bytes)
    }

    public func send(_ frame: Frame) throws {
        var encoder = FrameEncoder()
        encoder.append(frame)
        try flush(&encoder)
    }

    public func send<M: Message>(_ message: M, id: UInt32, flags: FrameFlags = []) throws {
        var encoder = FrameEncoder()
        encoder.append(id: id, flags: flags, message)
        try flush(&encoder)
    }

    public func sendData(id: UInt32, kind: FrameKind = .stdin, _ bytes: [UInt8], flags: FrameFlags = []) throws {
        var encoder = FrameEncoder()
        encoder.append(id: id, flags: flags, kind: kind, payload: bytes)
        try flush(&encoder)
    }

    public func sendHello() throws {
        try send(Hello(role: .client, name: "test", pid: getpid()), id: 0)
    }

    public func exec(_ request: ExecRequest, id: UInt32) throws {
        try send(request, id: id, flags: .start)
    }

    private func flush(_ encoder: inout FrameEncoder) throws {
        while !encoder.isEmpty {
            let n = encoder.withPendingBytes { raw in Glibc.write(fd, raw.baseAddress, raw.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ClientError("write failed: \(Errno.current)")
            }
            encoder.consume(n)
        }
    }

    // MARK: receiving

    /// The next frame from the socket, whatever its id; throws when `seconds` pass first or
    /// the peer closes.
    public func receiveAny(timeout seconds: Double = 30) throws -> Frame {
        let deadline = Clock.monotonicNs() + UInt64(seconds * 1e9)
        while true {
            if let frame = try decoder.next() {
                if recordOrder { received.append((frame.id, frame.kind)) }
                return frame
            }
            let now = Clock.monotonicNs()
            guard now < deadline else { throw ClientError("no frame within \(seconds) s") }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, CInt(min(1000, (deadline - now) / 1_000_000 + 1)))
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 { continue }
            let n = decoder.readInto(capacity: 256 << 10) { buffer in Glibc.read(fd, buffer.baseAddress, buffer.count) }
            if n == 0 { throw ClientError("the agent closed the connection") }
            if n < 0 && errno != EINTR && errno != EAGAIN { throw ClientError("read failed: \(Errno.current)") }
        }
    }

    /// Whether the peer closed the connection within `seconds` (frames before the close
    /// are kept for `next`).
    public func waitForClose(timeout seconds: Double = 30) -> Bool {
        while true {
            do {
                let frame = try receiveAny(timeout: seconds)
                stash[frame.id, default: []].append(frame)
            } catch let error as ClientError {
                return error.description.contains("closed")
            } catch {
                return true
            }
        }
    }

    /// The next frame for `id`; frames for other ids are kept for later.
    public func next(id: UInt32, timeout seconds: Double = 30) throws -> Frame {
        if var queue = stash[id], !queue.isEmpty {
            let frame = queue.removeFirst()
            stash[id] = queue
            return frame
        }
        while true {
            let frame = try receiveAny(timeout: seconds)
            if frame.id == id { return frame }
            stash[frame.id, default: []].append(frame)
        }
    }

    /// The next frame for `id` that is not a data frame or an ack (ignoring output).
    public func nextEvent(id: UInt32, timeout seconds: Double = 30) throws -> Frame {
        while true {
            let frame = try next(id: id, timeout: seconds)
            if !frame.kind.isData && frame.kind != .ack { return frame }
        }
    }

    /// Reads the agent's hello (its first frame).
    @discardableResult
    public func expectHello() throws -> Hello {
        let frame = try next(id: 0)
        guard frame.kind == .hello else { throw ClientError("first frame is \(frame.kind), not hello") }
        return try frame.decode(Hello.self)
    }

    /// Reads one session to its END, acking output as it arrives (unless `ack` is false),
    /// passing each data frame to `onData` too.
    public func collect(id: UInt32, ack: Bool = true, timeout seconds: Double = 60,
                        onData: ((Frame) throws -> Void)? = nil) throws -> Transcript {
        var transcript = Transcript()
        var unacked = 0
        while true {
            let frame = try next(id: id, timeout: seconds)
            transcript.kinds.append(frame.kind)
            switch frame.kind {
            case .started: transcript.started = try frame.decode(Started.self)
            case .stdout, .stderr:
                if frame.kind == .stdout { transcript.stdout += frame.payload } else { transcript.stderr += frame.payload }
                if transcript.exited != nil { transcript.bytesAfterExited += frame.payload.count }
                try onData?(frame)
                unacked += frame.payload.count
                if ack && unacked >= FlowControl.ackThresholdBytes {
                    try send(Ack(bytes: UInt64(unacked)), id: id)
                    unacked = 0
                }
            case .stdinError: transcript.stdinErrors.append(try frame.decode(StdinError.self))
            case .exited: transcript.exited = try frame.decode(Exited.self)
            case .failed: transcript.failed = try frame.decode(Failed.self)
            case .error: transcript.error = try frame.decode(ErrorMessage.self)
            case .ack: transcript.stdinAcks.append(Int(try frame.decode(Ack.self).bytes))
            case .attached: transcript.attached = try frame.decode(Attached.self)
            case .detached: transcript.detached = try frame.decode(Detached.self)
            default: break
            }
            if frame.flags.contains(.end) {
                transcript.endKind = frame.kind
                return transcript
            }
        }
    }
}

/// Everything one session sent, in order.
public struct Transcript {
    public var kinds: [FrameKind] = []
    public var started: Started?
    public var stdout: [UInt8] = []
    public var stderr: [UInt8] = []
    public var stdinErrors: [StdinError] = []
    public var exited: Exited?
    public var failed: Failed?
    public var error: ErrorMessage?
    public var attached: Attached?
    public var detached: Detached?
    /// Each stdin ack, in order.
    public var stdinAcks: [Int] = []
    public var stdinAcked: Int { stdinAcks.reduce(0, +) }
    public var bytesAfterExited = 0
    public var endKind: FrameKind?

    public init() {}

    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
    /// The non-data kinds in order: e.g. [started, exited, done].
    public var events: [FrameKind] { kinds.filter { !$0.isData && $0 != .ack && $0 != .stdinError } }
}
