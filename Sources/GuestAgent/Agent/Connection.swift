#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// The one connection to the host (the relay): frames in, frames out, and which session each
/// session id of this connection is bound to.
///
/// Owns the connected socket (nonblocking, CLOEXEC) and closes it in `close()`. Lives on the
/// agent's loop thread. Ends when the peer closes, on an I/O error, after a framing error or
/// an unsupported hello (the error frame is flushed first, for at most `closeFlushTimeout`),
/// or when the agent stops; its sessions are then unbound (killed unless detached).
///
/// Outbound bytes are bounded: above `highWaterBytes` queued, sessions stop reading their
/// pipes (they pause themselves and wait in `paused`), and resume once the queue drains below
/// `lowWaterBytes`. Above `inputPauseBytes` (a peer that sends but does not read even control
/// replies) the agent also stops reading from the peer.
final class Connection {
    static let highWaterBytes = 1 << 20
    static let lowWaterBytes = 256 << 10
    static let inputPauseBytes = 8 << 20
    /// Queued output at which the agent writes at once instead of at the end of the turn.
    static let eagerFlushBytes = 256 << 10
    static let readChunkBytes = 64 << 10
    static let closeFlushTimeout = Duration.seconds(2)

    unowned let agent: Agent
    let fd: CInt
    private var decoder = FrameDecoder()
    private var encoder = FrameEncoder()
    private var bindings: [UInt32: Session] = [:]
    private var paused: [Session] = []
    private(set) var congested = false
    private var readingPaused = false
    private var flushScheduled = false
    private var flushing = false
    private var registered: UInt32 = 0
    /// Flushing what is queued, then closing (after a framing error or an unsupported hello).
    private var closing = false
    private(set) var isClosed = false
    /// The version both sides speak, once the peer's hello arrived.
    private(set) var version: UInt32?

    init(agent: Agent, adopting fd: CInt) {
        self.agent = agent
        self.fd = fd
    }

    private var loop: EventLoop { agent.loop }

    /// Sends the agent's hello at once (DESIGN.md: the agent's first frame) and starts reading.
    func start(hello: Hello) {
        send(hello, id: 0)
        updateRegistration()
        flush()
    }

    // MARK: bindings

    func bind(_ session: Session, id: UInt32) { bindings[id] = session }
    func unbind(id: UInt32) { bindings[id] = nil }
    func isLive(_ id: UInt32) -> Bool { bindings[id] != nil }

    // MARK: outbound

    func send<M: Message>(_ message: M, id: UInt32, flags: FrameFlags = []) {
        guard !isClosed else { return }
        encoder.append(id: id, flags: flags, message)
        outputAppended()
    }

    func sendError(_ code: ErrorCode, _ message: String, id: UInt32, errno: CInt? = nil) {
        send(ErrorMessage(code: code, message: message, errno: errno), id: id, flags: id == 0 ? [] : .end)
    }

    /// A data frame whose payload `fill` reads straight into the outbound buffer.
    func appendOutput(id: UInt32, kind: FrameKind, maxPayload: Int, fill: (UnsafeMutableRawBufferPointer) -> Int) -> Int {
        guard !isClosed else { return 0 }
        return encoder.append(id: id, kind: kind, maxPayload: maxPayload, fill: fill)
    }

    func appendData(id: UInt32, kind: FrameKind, _ bytes: UnsafeRawBufferPointer) {
        guard !isClosed else { return }
        encoder.append(id: id, kind: kind, payload: bytes)
    }

    /// After appending: notes congestion and gets the bytes written (now, or at the end of
    /// this turn of the loop so that frames of one turn go out in one write).
    func outputAppended() {
        guard !isClosed else { return }
        let pending = encoder.pendingBytes
        if pending >= Self.highWaterBytes { congested = true }
        if pending >= Self.inputPauseBytes && !readingPaused {
            readingPaused = true
            updateRegistration()
        }
        if pending >= Self.eagerFlushBytes { flush() } else { scheduleFlush() }
    }

    func scheduleFlush() {
        guard !flushScheduled, !isClosed else { return }
        flushScheduled = true
        loop.soon { [self] in
            flushScheduled = false
            flush()
        }
    }

    /// A session that found the connection congested waits here for the queue to drain.
    func pause(_ session: Session) {
        guard !session.pausedByConnection else { return }
        session.pausedByConnection = true
        paused.append(session)
    }

    private func flush() {
        guard !isClosed, !flushing else { return }
        flushing = true
        defer { flushing = false }
        var blocked = false
        while !encoder.isEmpty {
            let result: Result<WriteResult, Errno> = encoder.withPendingBytes { raw in
                Result { () throws(Errno) -> WriteResult in try FileIO.write(fd, raw) }
            }
            switch result {
            case .success(.wrote(let n)): encoder.consume(n)
            case .success(.wouldBlock): blocked = true
            case .failure:
                // EPIPE, ECONNRESET: the peer is gone.
                flushing = false
                close()
                return
            }
            if blocked { break }
        }
        if encoder.isEmpty {
            encoder.releaseStorageIfIdle()
            if closing {
                flushing = false
                close()
                return
            }
        }
        let pending = encoder.pendingBytes
        if readingPaused && pending < Self.inputPauseBytes / 2 { readingPaused = false }
        updateRegistration()
        if congested && pending <= Self.lowWaterBytes {
            congested = false
            let waiting = paused
            paused.removeAll()
            flushing = false
            for session in waiting where session.pausedByConnection {
                session.pausedByConnection = false
                session.pump()
            }
        }
    }

    private func updateRegistration() {
        guard !isClosed else { return }
        var events: UInt32 = 0
        if !readingPaused && !closing { events |= EventLoop.readable | EventLoop.peerClosed }
        if !encoder.isEmpty { events |= EventLoop.writable }
        guard events != registered else { return }
        do {
            if events == 0 {
                loop.unwatch(fd)
            } else if registered == 0 {
                try loop.watch(fd, events: events) { [unowned self] ready in handle(ready) }
            } else {
                try loop.modify(fd, events: events)
            }
            registered = events
        } catch {
            Log.warning("cannot watch the connection: \(error)")
            close()
        }
    }

    private func handle(_ events: UInt32) {
        if events & EventLoop.writable != 0 { flush() }
        if isClosed { return }
        if events & (EventLoop.readable | EventLoop.peerClosed | EventLoop.hangUp | EventLoop.error) != 0 {
            if readingPaused || closing {
                // Not reading now; a hang-up still means the peer is gone.
                if events & (EventLoop.hangUp | EventLoop.error) != 0 { close() }
            } else {
                readable()
            }
        }
    }

    // MARK: inbound

    private func readable() {
        var failure: CInt = 0
        let n = decoder.readInto(capacity: Self.readChunkBytes) { buffer in
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n < 0 { failure = errno }
            return n
        }
        if n == 0 || (n < 0 && failure != EAGAIN && failure != EINTR) {
            close()
            return
        }
        do {
            while !isClosed && !closing && !readingPaused {
                guard try decoder.nextView({ frame in dispatch(frame) }) != nil else { break }
            }
        } catch {
            sendError(.framing, error.description, id: 0)
            closeAfterFlush()
            return
        }
        decoder.releaseStorageIfIdle()
    }

    /// Routes one frame. Never traps on peer bytes: every payload is decoded with typed errors.
    private func dispatch(_ frame: FrameView) {
        let header = frame.header
        if header.id == 0 {
            control(frame)
        } else if let session = bindings[header.id] {
            if header.flags.contains(.start) {
                // An error on the id itself would end (END) a session that is still running.
                sendError(.sessionInUse, "session id \(header.id) is still in use; a START needs an id that is not live", id: 0)
            } else {
                sessionControl(session, frame)
            }
        } else if header.flags.contains(.start) {
            agent.startRequest(frame, on: self)
        }
        // Anything else is a late frame for an id that is no longer live: an ack or stdin
        // the client sent before it read `done`, or a signal racing the exit. Frames can be
        // in flight both ways, so this is normal and the frame is dropped silently.
    }

    private func control(_ frame: FrameView) {
        switch frame.header.kind {
        case .hello:
            do {
                let hello = try Hello(cbor: frame.payload)
                guard hello.version >= 1 else {
                    sendError(.unsupported, "protocol version \(hello.version) is not supported; this agent speaks version \(protocolVersion)", id: 0)
                    closeAfterFlush()
                    return
                }
                version = min(hello.version, protocolVersion)
            } catch {
                sendError(.badPayload, "hello: \(error.description)", id: 0)
            }
        case .ping:
            do { send(Pong(nonce: try Ping(cbor: frame.payload).nonce), id: 0) } catch {
                sendError(.badPayload, "ping: \(error.description)", id: 0)
            }
        case .pong:
            break
        case .shutdown:
            do { agent.shutdown(graceMs: try Shutdown(cbor: frame.payload).graceMs, reason: "shutdown requested") } catch {
                sendError(.badPayload, "shutdown: \(error.description)", id: 0)
            }
        case .error:
            if let error = try? ErrorMessage(cbor: frame.payload) {
                Log.info("peer reported an error: \(error.code): \(error.message)")
            }
        default:
            sendError(.unknownKind, "kind \(frame.header.kind) is not a control message (id 0)", id: 0)
        }
    }

    private func sessionControl(_ session: Session, _ frame: FrameView) {
        let id = frame.header.id
        do throws(MessageError) {
            switch frame.header.kind {
            case .stdin:
                if !session.receiveStdin(frame.payload, end: frame.header.flags.contains(.end)) {
                    endBinding(session, id: id, .protocolViolation,
                               "more than \(Session.stdinLimitBytes) bytes of stdin unacknowledged (the window is \(FlowControl.initialWindowBytes))")
                }
            case .ack:
                session.grant(bytes: try Ack(cbor: frame.payload).bytes)
            case .resize:
                let size = try Resize(cbor: frame.payload).size
                session.resize(rows: size.rows, columns: size.cols)
            case .signal:
                session.killGroup(try SignalRequest(cbor: frame.payload).number)
            case .kill:
                _ = try KillRequest(cbor: frame.payload)
                session.killGroup(SIGKILL)
            case .detach:
                _ = try Detach(cbor: frame.payload)
                session.detached = true
                session.unbind()
                send(Detached(session: session.number), id: id, flags: .end)
            default:
                endBinding(session, id: id, .unknownKind, "kind \(frame.header.kind) is not valid on a running session")
            }
        } catch {
            endBinding(session, id: id, .badPayload, "\(frame.header.kind): \(error.description)")
        }
    }

    /// An error on a session ends it for this client (END): a detached session goes on
    /// unattached, any other loses its process group.
    private func endBinding(_ session: Session, id: UInt32, _ code: ErrorCode, _ message: String) {
        sendError(code, message, id: id)
        session.unbind()
        if !session.detached { session.killGroup(SIGKILL) }
    }

    // MARK: closing

    /// Stops reading, writes what is queued (at most `closeFlushTimeout`), then closes.
    func closeAfterFlush() {
        guard !closing, !isClosed else { return }
        closing = true
        updateRegistration()
        loop.schedule(after: Self.closeFlushTimeout) { [weak self] in self?.close() }
        flush()
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        loop.unwatch(fd)
        _ = Glibc.close(fd)
        registered = 0
        encoder.reset()
        let sessions = Array(bindings.values)
        bindings.removeAll()
        paused.removeAll()
        for session in sessions { session.connectionLost() }
        agent.connectionClosed(self)
    }

    /// Bytes queued and not yet written (shutdown waits for them to go out).
    var pendingBytes: Int { encoder.pendingBytes }
}
