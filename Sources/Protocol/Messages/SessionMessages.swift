// Messages on an exec session: events from the agent, and control from the client.

/// The exec succeeded; sent before any output. `failed` never follows it.
public struct Started: Message {
    public static let kind = FrameKind.started
    public var pid: Int32
    public init(pid: Int32) { self.pid = pid }
    public func encode(to map: inout CBORWriter.MapWriter) { map.entry("pid", pid) }
    public init(from r: MessageReader) throws(MessageError) { pid = try r.integer("pid") }
}

/// Writing to the child's stdin failed (EPIPE when it closed its end). Not terminal.
public struct StdinError: Message {
    public static let kind = FrameKind.stdinError
    public var errno: Int32
    public var message: String
    public init(errno: Int32, message: String) {
        self.errno = errno
        self.message = message
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("errno", errno)
        map.entry("message", message)
    }
    public init(from r: MessageReader) throws(MessageError) {
        errno = try r.integer("errno")
        message = try r.optionalText("message") ?? ""
    }
}

/// The leader's wait status: an exit code, or the signal that ended it.
public struct Exited: Message, Hashable {
    public static let kind = FrameKind.exited
    public var code: Int32?
    public var signal: Int32?
    public var coreDumped: Bool
    /// The request's `timeoutMs` ran out and the agent signalled the program: it did not end on
    /// its own. On the wire only when true (peers that do not know it read an ordinary exit).
    public var timedOut: Bool

    public init(code: Int32? = nil, signal: Int32? = nil, coreDumped: Bool = false, timedOut: Bool = false) {
        self.code = code
        self.signal = signal
        self.coreDumped = coreDumped
        self.timedOut = timedOut
    }

    public static func code(_ code: Int32) -> Exited { Exited(code: code) }
    public static func signal(_ signal: Int32, coreDumped: Bool = false) -> Exited { Exited(signal: signal, coreDumped: coreDumped) }

    /// The shell's convention: the code, or 128 + the signal.
    public var shellStatus: Int32 { code ?? (128 + (signal ?? 0)) }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("code", code)
        map.entry("signal", signal)
        map.entry("coreDumped", coreDumped)
        if timedOut { map.entry("timedOut", true) }
    }
    public init(from r: MessageReader) throws(MessageError) {
        code = try r.optionalInteger("code")
        signal = try r.optionalInteger("signal")
        coreDumped = try r.optionalBool("coreDumped") ?? false
        timedOut = try r.optionalBool("timedOut") ?? false
        if code == nil && signal == nil { throw .missingKey("code") }
    }
}

/// Last frame of a session that started (END).
public struct Done: Message {
    public static let kind = FrameKind.done
    public init() {}
    public func encode(to map: inout CBORWriter.MapWriter) {}
    public init(from r: MessageReader) throws(MessageError) {}
}

/// The program never started (END). `stage` says which step of the spawn failed.
public struct Failed: Message, Error, Codable {
    public static let kind = FrameKind.failed
    public var kind: SpawnFailureKind
    public var errno: Int32
    public var stage: SpawnStage
    public var message: String

    public init(kind: SpawnFailureKind, errno: Int32, stage: SpawnStage, message: String) {
        self.kind = kind
        self.errno = errno
        self.stage = stage
        self.message = message
    }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("kind", kind.rawValue)
        map.entry("errno", errno)
        map.entry("stage", stage.rawValue)
        map.entry("message", message)
    }
    public init(from r: MessageReader) throws(MessageError) {
        kind = SpawnFailureKind(rawValue: try r.text("kind"))
        errno = try r.optionalInteger("errno") ?? 0
        stage = SpawnStage(rawValue: try r.optionalText("stage") ?? "")
        message = try r.optionalText("message") ?? ""
    }
}

/// Set the session's terminal size (TIOCSWINSZ; the child gets SIGWINCH).
public struct Resize: Message {
    public static let kind = FrameKind.resize
    public var size: TerminalSize
    public init(rows: UInt16, cols: UInt16) { size = TerminalSize(rows: rows, cols: cols) }
    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("rows", size.rows)
        map.entry("cols", size.cols)
    }
    public init(from r: MessageReader) throws(MessageError) {
        size = TerminalSize(rows: try r.integer("rows"), cols: try r.integer("cols"))
    }
}

/// Send a signal to the session's process group.
public struct SignalRequest: Message {
    public static let kind = FrameKind.signal
    public var number: Int32
    public init(number: Int32) { self.number = number }
    public func encode(to map: inout CBORWriter.MapWriter) { map.entry("number", number) }
    public init(from r: MessageReader) throws(MessageError) {
        number = try r.integer("number")
        guard (1...64).contains(number) else { throw .invalidValue(key: "number", reason: "\(number) is not a signal number (1-64)") }
    }
}

/// SIGKILL the session's process group.
public struct KillRequest: Message {
    public static let kind = FrameKind.kill
    public init() {}
    public func encode(to map: inout CBORWriter.MapWriter) {}
    public init(from r: MessageReader) throws(MessageError) {}
}

/// Grants the sender `bytes` more of window: output (reader to agent) or stdin (agent to writer).
public struct Ack: Message {
    public static let kind = FrameKind.ack
    public var bytes: UInt64
    public init(bytes: UInt64) { self.bytes = bytes }
    public func encode(to map: inout CBORWriter.MapWriter) { map.entry("bytes", bytes) }
    public init(from r: MessageReader) throws(MessageError) { bytes = try r.integer("bytes") }
}
