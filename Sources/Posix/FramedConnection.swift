#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherProtocol

/// One framed connection with a loop to itself (the agent's link to the host, the client
/// library's link to the relay), on a `FramedLink`: frames in (read, then decode), frames out
/// (append, flush at the end of the turn or at once above `eagerFlushBytes`), and
/// backpressure on what is queued to the peer.
///
/// Backpressure: above `highWaterBytes` queued the connection is `congested`; producers that
/// see it stop feeding it, and `onDrained` runs once the queue is back below `lowWaterBytes`.
/// Above `inputPauseBytes` (a peer that sends but does not read even control replies) the
/// connection also stops reading from the peer until the queue halves.
///
/// Owns the socket (through its `FramedLink`) and closes it in `close()`. Touched only by the
/// loop's thread. Ends when the peer closes, on a read or write error, when an `epoll_ctl`
/// fails (the connection can no longer be waited for, so it is closed rather than left
/// deaf), after `closeAfterFlush` has written what was queued (or its timeout passed), or on
/// `close()`. `onClosed` then runs once.
public final class FramedConnection {
    /// Sizes that shape reading and backpressure.
    public struct Limits: Sendable {
        public var highWaterBytes = 1 << 20
        public var lowWaterBytes = 256 << 10
        public var inputPauseBytes = 8 << 20
        /// Queued output at which `queued()` writes at once instead of at the end of the turn.
        public var eagerFlushBytes = 256 << 10
        /// Bytes per read(2), and at most per readiness event (so one busy peer yields).
        public var readChunkBytes = 64 << 10
        public var readLimitBytes = 64 << 10
        public var closeFlushTimeout = Duration.seconds(2)
        public init() {}
    }

    /// Why the connection ended.
    public enum CloseReason: Equatable, Sendable {
        /// EOF from the peer, or `close()` called by the owner.
        case closed
        /// A read or write failed (ECONNRESET, EPIPE).
        case ioError(Errno)
        /// epoll_ctl refused the descriptor (ENOMEM, ENOSPC, EPERM for a file epoll cannot
        /// watch), or EPOLL_CTL_DEL found it closed under the connection (EBADF).
        case watchFailed(Errno)
    }

    public let loop: EventLoop
    public let limits: Limits
    private let link: ReadingLink
    private var socket: FrameSocket { link.socket }

    /// Runs for every frame read; the view is valid only during the call.
    public var onFrame: (FrameView) -> Void = { _ in }
    /// The bytes could not be split into frames; the owner answers (if it wants) and closes.
    public var onFramingError: (WireError) -> Void = { _ in }
    /// The queue drained below the low-water mark after it was congested.
    public var onDrained: () -> Void = {}
    /// Runs once, after the socket was closed.
    public var onClosed: (CloseReason) -> Void = { _ in }

    public private(set) var congested = false
    public private(set) var isClosed = false
    /// Flushing what is queued, then closing; nothing more is read.
    public private(set) var isClosing = false
    private var readingPaused: Bool {
        get { link.paused }
        set { link.paused = newValue }
    }
    private var flushScheduled = false
    private var flushing = false

    /// A link that reads unless paused or closing.
    private final class ReadingLink: FramedLink {
        var paused = false
        var closing = false
        override var wantsInput: Bool { !paused && !closing }
    }

    /// Takes the socket over; nothing happens until `start()`.
    public init(socket: FrameSocket, loop: EventLoop, limits: Limits = Limits()) {
        self.link = ReadingLink(socket: socket, loop: loop)
        self.loop = loop
        self.limits = limits
    }

    /// The socket's descriptor (-1 once closed).
    public var fd: CInt { socket.fd }
    /// Bytes queued and not yet written.
    public var pendingBytes: Int { socket.encoder.pendingBytes }

    /// Starts waiting for the peer (and for room to write what is already queued).
    public func start() {
        do { try link.watch { [unowned self] ready in handle(ready) } } catch {
            guard case .epoll(let errno) = error else { return }
            close(.watchFailed(errno))
            return
        }
        if !socket.encoder.isEmpty { flush() }
    }

    // MARK: outbound

    public func send<M: Message>(_ message: M, id: UInt32, flags: FrameFlags = []) {
        guard !isClosed else { return }
        socket.encoder.append(id: id, flags: flags, message)
        queued()
    }

    /// A frame built elsewhere (the client library's tasks build theirs off the loop thread).
    public func send(_ frame: Frame) {
        guard !isClosed else { return }
        socket.encoder.append(frame)
        queued()
    }

    /// A data frame whose payload `fill` reads straight into the outbound buffer (see
    /// `FrameEncoder.append(id:flags:kind:maxPayload:fill:)`). Call `queued()` after a batch.
    public func appendData(id: UInt32, kind: FrameKind, maxPayload: Int,
                           fill: (UnsafeMutableRawBufferPointer) -> Int) -> Int {
        guard !isClosed else { return 0 }
        return socket.encoder.append(id: id, kind: kind, maxPayload: maxPayload, fill: fill)
    }

    /// A data frame copied from `bytes`. Call `queued()` after a batch.
    public func appendData(id: UInt32, kind: FrameKind, _ bytes: UnsafeRawBufferPointer) {
        guard !isClosed else { return }
        socket.encoder.append(id: id, kind: kind, payload: bytes)
    }

    /// After appending: notes congestion and gets the bytes written (now, or at the end of
    /// this turn of the loop so that the frames of one turn leave in one write).
    public func queued() {
        guard !isClosed else { return }
        let pending = socket.encoder.pendingBytes
        if pending >= limits.highWaterBytes { congested = true }
        if pending >= limits.inputPauseBytes && !readingPaused {
            readingPaused = true
            updateInterest()
        }
        if pending >= limits.eagerFlushBytes { flush() } else { scheduleFlush() }
    }

    /// Writes at the end of this turn of the loop.
    public func scheduleFlush() {
        guard !flushScheduled, !isClosed else { return }
        flushScheduled = true
        loop.soon { [weak self] in
            guard let self else { return }
            flushScheduled = false
            flush()
        }
    }

    /// Writes what the socket takes now, then waits for EPOLLOUT only if bytes remain.
    public func flush() {
        guard !isClosed, !flushing else { return }
        flushing = true
        defer { flushing = false }
        let drained: Bool
        do { drained = try link.flush() } catch {
            switch error {
            case .write(let errno):
                // The peer is gone (EPIPE, ECONNRESET). What it sent before going may say why
                // (an error frame): hand that out first.
                readWhatIsLeft()
                close(.ioError(errno))
            case .epoll(let errno):
                close(.watchFailed(errno))
            }
            return
        }
        if drained && isClosing {
            close(.closed)
            return
        }
        let pending = socket.encoder.pendingBytes
        if readingPaused && pending < limits.inputPauseBytes / 2 { resumeReading() }
        if congested && pending <= limits.lowWaterBytes {
            congested = false
            // Producers resume here and may append (and flush) again.
            flushing = false
            onDrained()
        }
    }

    // MARK: interest and events

    private func updateInterest() {
        guard !isClosed else { return }
        do { try link.updateInterest() } catch {
            if case .epoll(let errno) = error { close(.watchFailed(errno)) }
        }
    }

    private func handle(_ events: UInt32) {
        if events & EventLoop.writable != 0 { flush() }
        if isClosed { return }
        guard events & (EventLoop.readable | EventLoop.peerClosed | EventLoop.hangUp | EventLoop.error) != 0 else { return }
        if readingPaused || isClosing {
            // Not reading now; a hang-up still means the peer is gone.
            if events & (EventLoop.hangUp | EventLoop.error) != 0 { close(.closed) }
        } else {
            readAndDecode()
        }
    }

    /// Reads once (up to `readLimitBytes`), then hands out every complete frame.
    private func readAndDecode() {
        let outcome = socket.read(chunk: limits.readChunkBytes, limit: limits.readLimitBytes)
        guard decodeBuffered() else { return }
        if outcome.closed {
            close(outcome.failure.map(CloseReason.ioError) ?? .closed)
            return
        }
        socket.decoder.releaseStorageIfIdle()
    }

    /// Hands out the complete frames the decoder holds until it runs dry or reading pauses.
    /// False when the connection closed (a framing error, or a frame that ended it).
    @discardableResult
    private func decodeBuffered() -> Bool {
        do {
            try link.handleFrames { frame in
                onFrame(frame)
                return !isClosed && !isClosing && !readingPaused
            }
        } catch {
            onFramingError(error)
            if !isClosing { close(.closed) }
            return false
        }
        return !isClosed
    }

    /// Reading resumed after a pause: frames read before it are already in the decoder and
    /// raise no readiness of their own, so they are handed out now (at the end of this turn),
    /// or a peer that waits for their answers would wait forever.
    private func resumeReading() {
        readingPaused = false
        updateInterest()
        guard socket.decoder.bufferedBytes > 0 else { return }
        loop.soon { [weak self] in
            guard let self, !isClosed, !isClosing, !readingPaused else { return }
            if decodeBuffered() { socket.decoder.releaseStorageIfIdle() }
        }
    }

    /// After a failed write: the frames the peer sent before it went, as far as they decode.
    private func readWhatIsLeft() {
        _ = socket.read(chunk: limits.readChunkBytes, limit: limits.readLimitBytes)
        _ = try? link.handleFrames { frame in
            onFrame(frame)
            return !isClosed
        }
    }

    // MARK: closing

    /// Stops reading, writes what is queued (for at most `closeFlushTimeout`), then closes.
    public func closeAfterFlush() {
        guard !isClosing, !isClosed else { return }
        isClosing = true
        link.closing = true
        updateInterest()
        loop.schedule(after: limits.closeFlushTimeout) { [weak self] in self?.close(.closed) }
        flush()
    }

    /// Closes the socket now; what is still queued is dropped.
    public func close(_ reason: CloseReason = .closed) {
        guard !isClosed else { return }
        isClosed = true
        var reason = reason
        // EPOLL_CTL_DEL fails only if the descriptor was closed under the connection: say so.
        if let failure = link.close(), reason == .closed { reason = .watchFailed(failure) }
        onClosed(reason)
    }
}
