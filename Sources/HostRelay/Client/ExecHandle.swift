import Synchronization
import TetherProtocol

/// A running session: its events, its stdin, and control over it.
///
/// Output is acknowledged as `events` hands it out, so the session's window is end-to-end
/// backpressure: a consumer that stops reading stops the program's output (and only that
/// program's). `events` can be iterated once; `collect()` and `wait()` iterate it for you.
public final class ExecHandle: Sendable {
    /// This connection's id for the session.
    public var id: UInt32 { channel.id }
    /// The program's pid in the sandbox, once started (0 if unknown).
    public let pid: Int32
    /// The relay's number for the session: set for `attach`, and after `detach()`.
    public var session: UInt32? { sessionNumber.withLock { $0 } }
    /// For `attach`: output lost while nobody watched (the oldest, before the replay).
    public let droppedBytes: UInt64
    /// The program runs on a pseudo-terminal (`ExecOptions.tty`, or an attached tty session):
    /// its output is all `stdout`, stdin goes to the terminal (closing it types the EOF
    /// character), and `resize` applies.
    public let isTerminal: Bool

    let channel: SessionChannel
    private let sessionNumber: Mutex<UInt32?>

    init(channel: SessionChannel, pid: Int32, session: UInt32? = nil, droppedBytes: UInt64 = 0, isTerminal: Bool = false) {
        self.channel = channel
        self.pid = pid
        self.sessionNumber = Mutex(session)
        self.droppedBytes = droppedBytes
        self.isTerminal = isTerminal
    }

    /// The session's events; the sequence ends after `done` and throws if the session ends
    /// otherwise. A second iteration throws `invalidArgument`.
    public var events: ExecEvents { ExecEvents(channel: channel) }

    /// The stdin sink, once (nil on a second call). Needs `ExecOptions.stdin` or a terminal.
    public func takeStdin() -> StdinWriter? {
        let first = channel.state.withLock { state -> Bool in
            defer { state.stdinTaken = true }
            return !state.stdinTaken
        }
        return first ? StdinWriter(channel: channel) : nil
    }

    /// Reads every event and returns the output and exit status.
    public func collect() async throws(TetherError) -> ExecOutput {
        var stdout: [UInt8] = []
        var stderr: [UInt8] = []
        var status: ExitStatus?
        var iterator = events.makeAsyncIterator()
        while let event = try await iterator.next() {
            switch event {
            case .stdout(let bytes): stdout += bytes
            case .stderr(let bytes): stderr += bytes
            case .exited(let exit): status = exit
            case .started, .stdinError: break
            }
        }
        guard let status else {
            throw TetherError(.protocolError, "the session ended without an exit status", operation: channel.operation,
                              context: channel.context)
        }
        return ExecOutput(stdout: stdout, stderr: stderr, status: status)
    }

    /// Waits for the program to end and returns how. If nobody iterates `events`, the output
    /// is read and thrown away (else the program would stop once its window is full).
    public func wait() async throws(TetherError) -> ExitStatus {
        let take = channel.state.withLock { state -> Bool in
            defer { state.eventsTaken = true }
            return !state.eventsTaken
        }
        if take {
            while try await channel.next() != nil {}
        } else {
            try await channel.waitForEnd()
        }
        switch channel.end {
        case .failed(let error): throw error
        case .detached(let number):
            throw TetherError(.invalidArgument, "the session was detached (session \(number))", operation: channel.operation,
                              context: channel.context)
        default: break
        }
        guard let exit = channel.exit else {
            throw TetherError(.protocolError, "the session ended without an exit status", operation: channel.operation,
                              context: channel.context)
        }
        return exit
    }

    /// Sends a signal to the program's process group.
    public func signal(_ number: Int32) {
        channel.connection.send(Frame(id: id, kind: .signal, payload: SignalRequest(number: number).cborBytes), for: channel)
    }

    /// SIGKILL to the program's process group.
    public func kill() {
        channel.connection.send(Frame(id: id, kind: .kill, payload: KillRequest().cborBytes), for: channel)
    }

    /// Sets the terminal size of a tty session (the program gets SIGWINCH).
    public func resize(rows: UInt16, cols: UInt16) {
        channel.connection.send(Frame(id: id, kind: .resize, payload: Resize(rows: rows, cols: cols).cborBytes), for: channel)
    }

    /// Leaves the program running without this client and returns the relay's session number
    /// (for `attach`). Events that arrive before the relay took the request still go to
    /// `events`; the rest are kept for the next attach.
    public func detach() async throws(TetherError) -> UInt32 {
        channel.connection.send(Frame(id: id, kind: .detach, payload: Detach().cborBytes), for: channel)
        try await channel.waitForEnd()
        switch channel.end {
        case .detached(let number):
            sessionNumber.withLock { $0 = number }
            return number
        case .failed(let error):
            throw error
        default:
            throw TetherError(.invalidArgument, "the session ended before it could be detached", operation: "detach",
                              context: channel.context)
        }
    }
}

/// The events of one session (see `ExecHandle.events`).
public struct ExecEvents: AsyncSequence, Sendable {
    public typealias Element = ExecEvent
    public typealias Failure = TetherError
    let channel: SessionChannel

    public func makeAsyncIterator() -> Iterator {
        let first = channel.state.withLock { state -> Bool in
            defer { state.eventsTaken = true }
            return !state.eventsTaken
        }
        return Iterator(channel: channel, usable: first)
    }

    public struct Iterator: AsyncIteratorProtocol {
        let channel: SessionChannel
        let usable: Bool

        public mutating func next() async throws(TetherError) -> ExecEvent? {
            guard usable else {
                throw TetherError(.invalidArgument, "the events of this session are already being read", operation: channel.operation,
                                  context: channel.context)
            }
            while let item = try await channel.next() {
                if case .event(let event) = item { return event }
            }
            switch channel.end {
            case .failed(let error): throw error
            default: return nil
            }
        }
    }
}

/// Writes a session's stdin, within the window the agent grants (a write waits while the
/// program is not reading). `close()` sends EOF.
public final class StdinWriter: Sendable {
    let channel: SessionChannel

    init(channel: SessionChannel) { self.channel = channel }

    public func write(_ bytes: [UInt8]) async throws(TetherError) { try await channel.writeStdin(bytes) }
    public func write(_ text: String) async throws(TetherError) { try await channel.writeStdin(Array(text.utf8)) }

    /// EOF for the program.
    public func close() throws(TetherError) { try channel.closeStdin() }
}
