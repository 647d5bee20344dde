#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherProtocol

/// A `FrameSocket` watched by an `EventLoop`: the one place where a framed socket is written
/// and its epoll interest kept in step with what is queued and whether its owner reads, and
/// the one loop that hands decoded frames out. The agent's and the client's
/// `FramedConnection` and the relay's client and agent links are built on it; each adds only
/// its own policy (backpressure, fair turns between many clients).
///
/// A link with nothing to wait for (its owner does not read and nothing is queued) leaves
/// the epoll set instead of staying in it with an empty mask: epoll reports EPOLLHUP
/// whatever the mask says, and a level-triggered hang-up nobody reads would spin the loop.
///
/// Owns its socket; `close()` unwatches it before closing. Touched only by the loop's thread.
open class FramedLink {
    public let socket: FrameSocket
    public let loop: EventLoop
    private var handler: EventLoop.Handler?
    /// The events epoll waits for now; 0 while not in the epoll set.
    private var registered: UInt32 = 0

    public init(socket: FrameSocket, loop: EventLoop) {
        self.socket = socket
        self.loop = loop
    }

    /// The socket's descriptor (-1 once closed).
    public var fd: CInt { socket.fd }

    /// Whether the owner reads from the peer now. An owner that overrides it calls
    /// `updateInterest()` after the answer changed.
    open var wantsInput: Bool { true }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        /// write(2) failed: the peer is gone (EPIPE, ECONNRESET).
        case write(Errno)
        /// epoll_ctl(2) refused the new interest (ENOMEM, ENOSPC, EPERM), or found the
        /// descriptor closed under the link (EBADF): the link cannot be waited for any more.
        case epoll(Errno)

        public var description: String {
            switch self {
            case .write(let errno): "write failed: \(errno)"
            case .epoll(let errno): "epoll_ctl failed: \(errno)"
            }
        }
    }

    /// Starts watching: `handler` gets the link's events from now on.
    public func watch(_ handler: @escaping EventLoop.Handler) throws(Failure) {
        self.handler = handler
        try updateInterest()
    }

    /// Tells epoll what the link waits for now: input if the owner reads, EPOLLOUT while
    /// bytes are queued.
    public func updateInterest() throws(Failure) {
        guard let handler, !socket.isClosed else { return }
        var events: UInt32 = 0
        if wantsInput { events |= EventLoop.readable | EventLoop.peerClosed }
        if !socket.encoder.isEmpty { events |= EventLoop.writable }
        guard events != registered else { return }
        do throws(Errno) {
            if events == 0 {
                if let failure = loop.unwatch(socket.fd) { throw failure }
            } else if registered == 0 {
                try loop.watch(socket.fd, events: events, handler)
            } else {
                try loop.modify(socket.fd, events: events)
            }
            registered = events
        } catch {
            throw .epoll(error)
        }
    }

    /// Writes what the socket takes now, then waits for EPOLLOUT only if bytes remain.
    /// Returns whether everything queued was written.
    @discardableResult
    public func flush() throws(Failure) -> Bool {
        let drained: Bool
        do { drained = try socket.flush() } catch { throw .write(error) }
        try updateInterest()
        return drained
    }

    /// Hands each decoded frame to `handle` until the decoder runs dry, `budget` frames were
    /// handled, or `handle` returns false (the owner stopped reading or closed the link).
    /// Returns the frames handled; throws the framing error that makes the stream unreadable.
    @discardableResult
    public func handleFrames(budget: Int = .max, _ handle: (FrameView) -> Bool) throws(WireError) -> Int {
        var handled = 0
        while handled < budget {
            guard let goOn = try socket.decoder.nextView(handle) else { break }
            handled += 1
            if !goOn { break }
        }
        return handled
    }

    /// Unwatches and closes the socket; what is queued is dropped. Returns what EPOLL_CTL_DEL
    /// said if it failed (the descriptor was closed under the link).
    @discardableResult
    public func close() -> Errno? {
        guard !socket.isClosed else { return nil }
        let failure = registered != 0 ? loop.unwatch(socket.fd) : nil
        registered = 0
        handler = nil
        socket.close()
        socket.encoder.reset()
        return failure
    }
}
