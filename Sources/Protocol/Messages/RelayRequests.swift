// Requests only a relay answers (kinds 0x26-0x2F of the relay's range; every kind is listed in Frame.swift).
// An agent that gets one answers `error{unknownKind}` with END, like any kind it does not know.
//
// | kind | name          | direction        | payload                                            |
// | 0x26 | logs          | to relay, START  | `{session?, follow}`: read exec.log. The reply is  |
// |      |               |                  | `stdout` frames holding whole JSON lines (acked    |
// |      |               |                  | like exec output), then `done {}` END. Without     |
// |      |               |                  | `session` every line; with it, that session's.     |
// |      |               |                  | `follow` keeps sending new lines until the client  |
// |      |               |                  | sends `kill` on the id (then `done` END).          |
// | 0x27 | signalSession | to relay, START  | `{session, number}`: signal another session's      |
// |      |               |                  | process group (9 kills it). Reply `done {}` END,   |
// |      |               |                  | or `error{unknownSession}` END.                    |
//
// `session` is the relay's number for a session, the one `sessionList` reports.
//
// Error codes a relay adds (besides `agentUnresponsive` and `agentGone`): `agentNotReady`,
// sent with END on a request that arrived while the relay was (re)connecting to its agent.
// Nothing reached the agent, so a client may retry the request (the only transient code).

extension FrameKind {
    public static let logs = FrameKind(rawValue: 0x26)
    public static let signalSession = FrameKind(rawValue: 0x27)

    static let relayRequests: [FrameKind] = [.logs, .signalSession]

    var relayRequestName: String? {
        switch self {
        case .logs: "logs"
        case .signalSession: "signalSession"
        default: nil
        }
    }

    /// Kinds 0x20-0x2F: answered by whoever serves the connection (relay or agent), never
    /// forwarded. Everything else that starts a session goes to the agent.
    public var isSessionRequest: Bool { (0x20...0x2F).contains(rawValue) }
}

/// Read the relay's exec.log (see the table above).
public struct LogsRequest: Message {
    public static let kind = FrameKind.logs
    /// Only this session's lines (the relay's session number); nil for all.
    public var session: UInt32?
    /// After the history, keep sending lines as they are written, until `kill`.
    public var follow: Bool

    public init(session: UInt32? = nil, follow: Bool = false) {
        self.session = session
        self.follow = follow
    }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("session", session)
        map.entry("follow", follow)
    }

    public init(from r: MessageReader) throws(MessageError) {
        session = try r.optionalInteger("session")
        follow = try r.optionalBool("follow") ?? false
    }
}

/// Signal a session by its relay number, from any connection (`tether kill`).
public struct SignalSession: Message {
    public static let kind = FrameKind.signalSession
    public var session: UInt32
    public var number: Int32

    public init(session: UInt32, number: Int32) {
        self.session = session
        self.number = number
    }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("session", session)
        map.entry("number", number)
    }

    public init(from r: MessageReader) throws(MessageError) {
        session = try r.integer("session")
        number = try r.integer("number")
        guard (1...64).contains(number) else { throw .invalidValue(key: "number", reason: "\(number) is not a signal number (1-64)") }
    }
}
