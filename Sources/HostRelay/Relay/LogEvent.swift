import TetherProtocol

/// Which data stream a log line carries.
public enum LogStream: String, Sendable {
    case stdout, stderr, stdin
}

/// One thing exec.log records about a session (or, on session 0, about the relay).
public enum LogEvent: Sendable, Equatable {
    /// Output or input bytes, exactly as they crossed the relay.
    case data(LogStream, [UInt8])
    /// A client asked to run a program.
    case exec(argv: [String], cwd: String?, user: String?, tty: Bool, stdin: Bool, detach: Bool)
    case started(pid: Int32)
    case exited(Exited)
    /// The program never started.
    case failed(Failed)
    /// The session ended with an error (from the agent, or the relay's own, e.g. agentGone).
    case error(code: String, message: String)
    /// The agent's `done`: nothing more will come for the session.
    case end
    case attached(droppedBytes: UInt64)
    case detached
    /// The relay killed the session because its client went away.
    case killed(reason: String)
    /// A relay-level marker (session 0): `relayStarted`, `agentConnected`, `agentGone`, ...
    case relay(String, detail: String)
    /// The writer's queue was full: this many entries (and data bytes) never reached the file.
    case logDropped(entries: UInt64, bytes: UInt64)

    /// Bytes this entry holds beyond its fixed size, for the writer queue's bound.
    var payloadBytes: Int {
        switch self {
        case .data(_, let bytes): bytes.count
        case .exec(let argv, _, _, _, _, _): argv.reduce(0) { $0 + $1.utf8.count }
        default: 0
        }
    }

    /// Ends the session's record (so a carried partial UTF-8 sequence is written out).
    var endsSession: Bool {
        switch self {
        case .end, .failed, .error, .killed: true
        default: false
        }
    }
}
