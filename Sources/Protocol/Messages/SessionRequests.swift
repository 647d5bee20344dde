// Requests about sessions rather than inside one (kinds 0x20-0x2F; every kind is listed in Frame.swift).
//
// Both the agent and the relay answer them: a client asks the relay, and a relay that
// restarted asks the agent, to list the running sessions and to attach to a detached one.
//
// | kind | name        | direction        | payload                                             |
// | 0x20 | listSessions| to server, START | `{}`                                                |
// | 0x21 | sessionList | reply, END       | `{sessions: [SessionInfo]}`                         |
// | 0x22 | attach      | to server, START | `{session, replay?}`; the new id then carries that  |
// |      |             |                  | session's events, and its controls reach it         |
// | 0x23 | attached    | reply            | `{session, pid, tty, droppedBytes}`, then events     |
// | 0x24 | detach      | to server        | `{}` on a session: leave it running, stop watching  |
// | 0x25 | detached    | reply, END       | `{session}`: this id is free, the process goes on   |
//
// `session` is the server's own number for a session, stable while it lives (the id it was
// started on is only meaningful on that connection).

extension FrameKind {
    public static let listSessions = FrameKind(rawValue: 0x20)
    public static let sessionList = FrameKind(rawValue: 0x21)
    public static let attach = FrameKind(rawValue: 0x22)
    public static let attached = FrameKind(rawValue: 0x23)
    public static let detach = FrameKind(rawValue: 0x24)
    public static let detached = FrameKind(rawValue: 0x25)

    static let sessionRequests: [FrameKind] = [.listSessions, .sessionList, .attach, .attached, .detach, .detached]

    var sessionRequestName: String? {
        switch self {
        case .listSessions: "listSessions"
        case .sessionList: "sessionList"
        case .attach: "attach"
        case .attached: "attached"
        case .detach: "detach"
        case .detached: "detached"
        default: nil
        }
    }
}

public struct ListSessions: Message {
    public static let kind = FrameKind.listSessions
    public init() {}
    public func encode(to map: inout CBORWriter.MapWriter) {}
    public init(from r: MessageReader) throws(MessageError) {}
}

/// One running (or exited but not yet drained) session, as `sessionList` reports it.
public struct SessionInfo: Hashable, Sendable {
    public var session: UInt32
    public var pid: Int32
    public var argv: [String]
    public var tty: Bool
    public var detached: Bool
    /// Someone is watching it now (its events go to a connection).
    public var attached: Bool
    /// CLOCK_REALTIME when it started, in ns since the epoch.
    public var startedNs: UInt64
    /// The leader has exited; the session lives on only until its output is read.
    public var exited: Exited?

    public init(session: UInt32, pid: Int32, argv: [String], tty: Bool, detached: Bool, attached: Bool,
                startedNs: UInt64, exited: Exited? = nil) {
        self.session = session
        self.pid = pid
        self.argv = argv
        self.tty = tty
        self.detached = detached
        self.attached = attached
        self.startedNs = startedNs
        self.exited = exited
    }
}

public struct SessionList: Message {
    public static let kind = FrameKind.sessionList
    public var sessions: [SessionInfo]
    public init(sessions: [SessionInfo]) { self.sessions = sessions }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("sessions") { w in
            w.arrayHeader(count: sessions.count)
            for s in sessions {
                w.map { m in
                    m.entry("session", s.session)
                    m.entry("pid", s.pid)
                    m.entry("argv", s.argv)
                    m.entry("tty", s.tty)
                    m.entry("detached", s.detached)
                    m.entry("attached", s.attached)
                    m.entry("startedNs", s.startedNs)
                    if let exited = s.exited { m.entry("exited") { w in exited.encode(to: &w) } }
                }
            }
        }
    }

    public init(from r: MessageReader) throws(MessageError) {
        let value = try r.value("sessions")
        guard case .array(let items) = value else { throw .wrongType(key: "sessions", expected: "an array", found: value.typeName) }
        sessions = []
        for item in items {
            guard case .map(let map) = item else { throw .wrongType(key: "sessions", expected: "an array of maps", found: item.typeName) }
            let s = MessageReader(map, path: "sessions")
            sessions.append(SessionInfo(
                session: try s.integer("session"),
                pid: try s.integer("pid"),
                argv: try s.optionalTextArray("argv") ?? [],
                tty: try s.optionalBool("tty") ?? false,
                detached: try s.optionalBool("detached") ?? false,
                attached: try s.optionalBool("attached") ?? false,
                startedNs: try s.optionalInteger("startedNs") ?? 0,
                exited: try s.optionalReader("exited").map { (e) throws(MessageError) in try Exited(from: e) }))
        }
    }
}

public struct Attach: Message {
    public static let kind = FrameKind.attach
    public var session: UInt32
    /// Send what was buffered while nobody watched before the live output (default true).
    public var replay: Bool
    public init(session: UInt32, replay: Bool = true) {
        self.session = session
        self.replay = replay
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("session", session)
        map.entry("replay", replay)
    }
    public init(from r: MessageReader) throws(MessageError) {
        session = try r.integer("session")
        replay = try r.optionalBool("replay") ?? true
    }
}

public struct Attached: Message {
    public static let kind = FrameKind.attached
    public var session: UInt32
    public var pid: Int32
    public var tty: Bool
    /// Output that did not fit in the bounded buffer while nobody watched, oldest first, lost.
    public var droppedBytes: UInt64
    public init(session: UInt32, pid: Int32, tty: Bool, droppedBytes: UInt64) {
        self.session = session
        self.pid = pid
        self.tty = tty
        self.droppedBytes = droppedBytes
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("session", session)
        map.entry("pid", pid)
        map.entry("tty", tty)
        map.entry("droppedBytes", droppedBytes)
    }
    public init(from r: MessageReader) throws(MessageError) {
        session = try r.integer("session")
        pid = try r.optionalInteger("pid") ?? 0
        tty = try r.optionalBool("tty") ?? false
        droppedBytes = try r.optionalInteger("droppedBytes") ?? 0
    }
}

public struct Detach: Message {
    public static let kind = FrameKind.detach
    public init() {}
    public func encode(to map: inout CBORWriter.MapWriter) {}
    public init(from r: MessageReader) throws(MessageError) {}
}

public struct Detached: Message {
    public static let kind = FrameKind.detached
    public var session: UInt32
    public init(session: UInt32) { self.session = session }
    public func encode(to map: inout CBORWriter.MapWriter) { map.entry("session", session) }
    public init(from r: MessageReader) throws(MessageError) { session = try r.integer("session") }
}
