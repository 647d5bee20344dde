#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

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

    init(socket: FrameSocket, loop: EventLoop, serial: UInt64) {
        self.serial = serial
        super.init(socket: socket, loop: loop)
    }

    override var wantsInput: Bool { !inputPaused && !busy }
    var label: String { "client \(serial)" + (hello.map { " (\($0.name) pid \($0.pid))" } ?? "") }
}

/// The connection to the agent: its socket, its hello once received, and liveness.
///
/// Closed by `AgentChannel`. Touched only by the relay's loop thread.
final class AgentLink: FramedLink {
    var hello: Hello?
    var lastHeardNs: UInt64
    var helloTimer: TimerID?

    override init(socket: FrameSocket, loop: EventLoop) {
        lastHeardNs = Clock.monotonicNs()
        super.init(socket: socket, loop: loop)
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
