// Messages on the control channel (id 0): hello, error, ping/pong, shutdown.

/// Who is speaking on a connection.
public struct PeerRole: RawRepresentable, Hashable, Sendable {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let agent = PeerRole(rawValue: "agent")
    public static let relay = PeerRole(rawValue: "relay")
    public static let client = PeerRole(rawValue: "client")
}

/// Sent by each side at once on connect, without waiting for the other's.
public struct Hello: Message {
    public static let kind = FrameKind.hello
    public var version: UInt32
    public var role: PeerRole
    public var name: String
    public var pid: Int32
    public var capabilities: [String]
    /// Agents (and relays, passing on their agent's) say which build they are.
    public var agentVersion: String?
    /// CLOCK_BOOTTIME when the agent's main started, and when it was ready to serve (ns).
    public var bootNs: UInt64?
    public var readyNs: UInt64?

    public init(version: UInt32 = protocolVersion, role: PeerRole, name: String, pid: Int32,
                capabilities: [String] = [], agentVersion: String? = nil, bootNs: UInt64? = nil, readyNs: UInt64? = nil) {
        self.version = version
        self.role = role
        self.name = name
        self.pid = pid
        self.capabilities = capabilities
        self.agentVersion = agentVersion
        self.bootNs = bootNs
        self.readyNs = readyNs
    }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("version", version)
        map.entry("role", role.rawValue)
        map.entry("name", name)
        map.entry("pid", pid)
        map.entry("capabilities", capabilities)
        map.entry("agentVersion", agentVersion)
        map.entry("bootNs", bootNs)
        map.entry("readyNs", readyNs)
    }

    public init(from r: MessageReader) throws(MessageError) {
        version = try r.integer("version")
        role = PeerRole(rawValue: try r.text("role"))
        name = try r.optionalText("name") ?? ""
        pid = try r.optionalInteger("pid") ?? 0
        capabilities = try r.optionalTextArray("capabilities") ?? []
        agentVersion = try r.optionalText("agentVersion")
        bootNs = try r.optionalInteger("bootNs")
        readyNs = try r.optionalInteger("readyNs")
    }
}

/// Machine-readable error codes carried by `error` frames. An open set: a code this build
/// does not know still decodes.
public struct ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    /// The peer speaks no protocol version we can.
    public static let unsupported = ErrorCode(rawValue: "unsupported")
    /// A frame length outside 6 ... 1 MiB + 6; the connection is closed after this.
    public static let framing = ErrorCode(rawValue: "framing")
    /// A payload that is not the message its kind says.
    public static let badPayload = ErrorCode(rawValue: "badPayload")
    /// A kind the receiver does not handle (on that id).
    public static let unknownKind = ErrorCode(rawValue: "unknownKind")
    /// A frame for a session id that is not open.
    public static let unknownSession = ErrorCode(rawValue: "unknownSession")
    /// A START frame for an id that is still in use.
    public static let sessionInUse = ErrorCode(rawValue: "sessionInUse")
    /// A bounded table (sessions, connections) is full.
    public static let limitReached = ErrorCode(rawValue: "limitReached")
    /// The agent is shutting down and takes no new sessions.
    public static let shuttingDown = ErrorCode(rawValue: "shuttingDown")
    /// The relay has heard nothing from the agent for longer than its liveness timeout.
    public static let agentUnresponsive = ErrorCode(rawValue: "agentUnresponsive")
    /// The relay's connection to the agent is gone; the session's fate is unknown.
    public static let agentGone = ErrorCode(rawValue: "agentGone")
    /// The peer broke the protocol in a way that is not one of the above.
    public static let protocolViolation = ErrorCode(rawValue: "protocolViolation")
    /// The receiver failed for a reason of its own (a syscall failed); `errno` says which.
    public static let `internal` = ErrorCode(rawValue: "internal")
    /// A request from a client that has not sent its `hello` yet; the request did not run.
    public static let helloRequired = ErrorCode(rawValue: "helloRequired")
    /// The relay takes no more clients (its `--max-clients` cap, or its descriptor limit when
    /// `errno` is EMFILE or ENFILE); sent on id 0, then the connection is closed.
    public static let tooManyClients = ErrorCode(rawValue: "tooManyClients")
}

/// On id 0 it reports a connection-level problem; on a session it also ends it (END).
public struct ErrorMessage: Message, Error {
    public static let kind = FrameKind.error
    public var code: ErrorCode
    public var message: String
    public var errno: Int32?

    public init(code: ErrorCode, message: String, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("code", code.rawValue)
        map.entry("message", message)
        map.entry("errno", errno)
    }

    public init(from r: MessageReader) throws(MessageError) {
        code = ErrorCode(rawValue: try r.text("code"))
        message = try r.optionalText("message") ?? ""
        errno = try r.optionalInteger("errno")
    }
}

public struct Ping: Message {
    public static let kind = FrameKind.ping
    public var nonce: UInt64
    public init(nonce: UInt64) { self.nonce = nonce }
    public func encode(to map: inout CBORWriter.MapWriter) { map.entry("nonce", nonce) }
    public init(from r: MessageReader) throws(MessageError) { nonce = try r.integer("nonce") }
}

public struct Pong: Message {
    public static let kind = FrameKind.pong
    public var nonce: UInt64
    public init(nonce: UInt64) { self.nonce = nonce }
    public func encode(to map: inout CBORWriter.MapWriter) { map.entry("nonce", nonce) }
    public init(from r: MessageReader) throws(MessageError) { nonce = try r.integer("nonce") }
}

/// Asks the agent to end every session (TERM, then KILL after `graceMs`) and power off.
public struct Shutdown: Message {
    public static let kind = FrameKind.shutdown
    public var graceMs: UInt64?
    public init(graceMs: UInt64? = nil) { self.graceMs = graceMs }
    public func encode(to map: inout CBORWriter.MapWriter) { map.entry("graceMs", graceMs) }
    public init(from r: MessageReader) throws(MessageError) { graceMs = try r.optionalInteger("graceMs") }
}
