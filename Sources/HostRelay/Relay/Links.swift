#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// A framed connection the relay watches: its socket, and whether EPOLLOUT is armed. The one
/// place where the relay flushes a socket and then changes its epoll interest, for clients and
/// the agent alike.
///
/// Owns its `FrameSocket`; `close(on:)` unwatches it before closing. Touched only by the
/// relay's loop thread.
class FramedLink {
    let socket: FrameSocket
    /// EPOLLOUT is armed because output is waiting.
    private(set) var wantsWrite = false

    init(socket: FrameSocket) { self.socket = socket }

    var fd: CInt { socket.fd }

    /// The events to watch besides EPOLLOUT; 0 pauses reading.
    var readInterest: UInt32 { EventLoop.readable | EventLoop.peerClosed }

    enum Failure: Error, CustomStringConvertible {
        /// write(2) failed: the peer is gone (EPIPE, ECONNRESET).
        case write(Errno)
        /// epoll_ctl(2) refused the new interest: the link cannot be served any more.
        case epoll(Errno)

        var description: String {
            switch self {
            case .write(let errno): "write failed: \(errno)"
            case .epoll(let errno): "epoll_ctl failed: \(errno)"
            }
        }
    }

    /// Writes what the socket takes; arms EPOLLOUT while bytes are left, disarms it once none
    /// are. Returns whether everything was written.
    @discardableResult
    func flush(on loop: EventLoop) throws(Failure) -> Bool {
        let drained: Bool
        do { drained = try socket.flush() } catch { throw .write(error) }
        if drained == wantsWrite {
            wantsWrite = !drained
            try updateInterest(on: loop)
        }
        return drained
    }

    /// Tells epoll what the link waits for now (after `readInterest` changed).
    func updateInterest(on loop: EventLoop) throws(Failure) {
        do { try loop.modify(fd, events: readInterest | (wantsWrite ? EventLoop.writable : 0)) } catch { throw .epoll(error) }
    }

    /// Starts watching the link: `handler` gets its events.
    func watch(on loop: EventLoop, _ handler: @escaping EventLoop.Handler) throws(Failure) {
        do { try loop.watch(fd, events: readInterest, handler) } catch { throw .epoll(error) }
    }

    /// Unwatches and closes the socket. Returns what EPOLL_CTL_DEL said if it failed.
    @discardableResult
    func close(on loop: EventLoop) -> Errno? {
        let failure = socket.isClosed ? nil : loop.unwatch(fd)
        socket.close()
        return failure
    }

    /// Hands each decoded frame to `handle` until the decoder runs dry, `budget` frames were
    /// handled, or `handle` returns false (the link was closed). Returns the frames handled;
    /// throws the framing error that makes the stream unreadable.
    func handleFrames(budget: Int = .max, _ handle: (FrameView) -> Bool) throws(WireError) -> Int {
        var handled = 0
        while handled < budget {
            guard let goOn = try socket.decoder.nextView(handle) else { break }
            handled += 1
            if !goOn { break }
        }
        return handled
    }
}

/// One client connection: its socket and the sessions it has open, by the client's own ids.
///
/// Closed by `ClientLinks.close(_:reason:)`. Touched only by the relay's loop thread.
final class ClientLink: FramedLink {
    /// For diagnostics: the n-th client since the relay started.
    let serial: UInt64
    var sessions: [UInt32: RelaySession] = [:]
    var hello: Hello?
    /// Not reading its frames while the agent's queue is over the high-water mark.
    var pausedForAgent = false
    /// Not reading its frames while its own unread output is over the high-water mark: a
    /// client that sends requests and never reads the answers would otherwise grow the relay
    /// without bound.
    var pausedForBacklog = false
    var inputPaused: Bool { pausedForAgent || pausedForBacklog }
    /// It had more frames than one turn handles: it waits in the queue of busy clients (its
    /// readiness is not watched meanwhile) instead of taking turns from epoll.
    var busy = false
    var closed = false

    init(socket: FrameSocket, serial: UInt64) {
        self.serial = serial
        super.init(socket: socket)
    }

    override var readInterest: UInt32 { inputPaused || busy ? 0 : EventLoop.readable | EventLoop.peerClosed }
    var label: String { "client \(serial)" + (hello.map { " (\($0.name) pid \($0.pid))" } ?? "") }
}

/// The connection to the agent: its socket, its hello once received, and liveness.
///
/// Closed by `AgentChannel`. Touched only by the relay's loop thread.
final class AgentLink: FramedLink {
    var hello: Hello?
    var lastHeardNs: UInt64
    var helloTimer: TimerID?

    override init(socket: FrameSocket) {
        lastHeardNs = Clock.monotonicNs()
        super.init(socket: socket)
    }
}

/// Typed failures of the relay as a whole (what ends `Relay.run()`).
public enum RelayError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No hello from the agent within the deadline; `lastError` says what the last attempt saw.
    case agentUnreachable(address: String, seconds: Double, lastError: String)
    /// The agent speaks no protocol version the relay does.
    case agentIncompatible(String)
    /// The client socket could not be opened.
    case listen(SocketError)
    /// exec.log could not be opened.
    case log(path: String, Errno)
    /// The event loop or the after-setup hook failed.
    case setup(String)

    public var description: String {
        switch self {
        case .agentUnreachable(let address, let seconds, let last):
            "no hello from the agent at \(address) within \(seconds)s (last attempt: \(last))"
        case .agentIncompatible(let why): "the agent is incompatible: \(why)"
        case .listen(let error): "cannot listen for clients: \(error)"
        case .log(let path, let errno): "cannot open \(path): \(errno)"
        case .setup(let why): "relay setup failed: \(why)"
        }
    }

    /// A hint line for the CLI.
    public var suggestion: String {
        switch self {
        case .agentUnreachable:
            "check that the sandbox is running and that --agent names its socket; raise --agent-timeout for slow boots"
        case .agentIncompatible: "use a relay and agent from the same release"
        case .listen: "pick another --listen path, or stop the relay already serving it"
        case .log: "pick a writable --log-dir, or pass --no-log"
        case .setup: "see the message above"
        }
    }
}

/// Where relay diagnostics go by default.
public enum RelayDiagnostics {
    /// One line to standard error, prefixed `tether relay:`.
    public static func standardError(_ line: String) {
        let bytes = Array("tether relay: \(line)\n".utf8)
        bytes.withUnsafeBytes { raw in _ = Glibc.write(2, raw.baseAddress, raw.count) }
    }
}
