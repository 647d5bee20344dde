// Background processes (kinds 0x50-0x5F; every kind is listed in Frame.swift). Capability `proc/1`.
//
// A named process is a detached exec session the agent keeps under a unique name, with a
// bounded log of its output (absolute byte offsets), readiness conditions it checks itself
// and an optional restart policy. The relay forwards these kinds to the agent unread.
//
// | kind | name               | direction        | payload                                              |
// | 0x50 | processStart       | to agent, START  | `{name, exec, ready?, waitTimeoutMs?, logBytes?, restart?}` |
// | 0x51 | processReady       | reply, END       | `{process}`: started, and every condition held        |
// | 0x52 | processFailed      | reply, END       | `{code, message, condition?, elapsedMs, exited?, tail, process}` |
// | 0x53 | processList        | to agent, START  | `{name?}`                                             |
// | 0x54 | processTable       | reply, END       | `{processes: [ProcessEntry]}`                          |
// | 0x55 | processLogs        | to agent, START  | `{name, from?, tail?, follow?}`                       |
// | 0x56 | processLogPosition | reply            | `{offset, droppedBytes}`: the next data byte's offset |
// | 0x57 | processSignal      | to agent, START  | `{name, number}`; answered `done`                     |
// | 0x58 | processWait        | to agent, START  | `{name}`                                              |
// | 0x59 | processEnded       | reply, END       | `{process}` once it will not run again                |
// | 0x5A | processRemove      | to agent, START  | `{name}`; answered `done`                             |

extension FrameKind {
    public static let processStart = FrameKind(rawValue: 0x50)
    public static let processReady = FrameKind(rawValue: 0x51)
    public static let processFailed = FrameKind(rawValue: 0x52)
    public static let processList = FrameKind(rawValue: 0x53)
    public static let processTable = FrameKind(rawValue: 0x54)
    public static let processLogs = FrameKind(rawValue: 0x55)
    public static let processLogPosition = FrameKind(rawValue: 0x56)
    public static let processSignal = FrameKind(rawValue: 0x57)
    public static let processWait = FrameKind(rawValue: 0x58)
    public static let processEnded = FrameKind(rawValue: 0x59)
    public static let processRemove = FrameKind(rawValue: 0x5A)

    static let processKinds: [FrameKind] = [
        .processStart, .processReady, .processFailed, .processList, .processTable, .processLogs,
        .processLogPosition, .processSignal, .processWait, .processEnded, .processRemove,
    ]

    var processKindName: String? {
        switch self {
        case .processStart: "processStart"
        case .processReady: "processReady"
        case .processFailed: "processFailed"
        case .processList: "processList"
        case .processTable: "processTable"
        case .processLogs: "processLogs"
        case .processLogPosition: "processLogPosition"
        case .processSignal: "processSignal"
        case .processWait: "processWait"
        case .processEnded: "processEnded"
        case .processRemove: "processRemove"
        default: nil
        }
    }
}

/// An HTTP readiness probe: `GET path` over HTTP/1.0 to `host:port`, ready on a status 200-399.
public struct HTTPProbe: Hashable, Sendable {
    /// A numeric IPv4 or IPv6 address, or `localhost`.
    public var host: String
    public var port: UInt16
    public var path: String
    public init(host: String = "127.0.0.1", port: UInt16, path: String = "/") {
        self.host = host
        self.port = port
        self.path = path
    }
}

/// What must hold before a process counts as ready; every condition given must hold at once.
public struct Readiness: Hashable, Sendable {
    /// TCP ports some socket listens on (any local address, IPv4 or IPv6).
    public var ports: [UInt16]
    public var http: [HTTPProbe]
    /// POSIX extended regular expressions, each matched against whole lines of output.
    public var logs: [String]
    /// Paths that must exist.
    public var files: [String]
    /// Commands that must exit 0 (run with the process's environment, user and directory).
    public var execs: [[String]]

    public init(ports: [UInt16] = [], http: [HTTPProbe] = [], logs: [String] = [], files: [String] = [], execs: [[String]] = []) {
        self.ports = ports
        self.http = http
        self.logs = logs
        self.files = files
        self.execs = execs
    }

    public var isEmpty: Bool { ports.isEmpty && http.isEmpty && logs.isEmpty && files.isEmpty && execs.isEmpty }

    func encode(to m: inout CBORWriter.MapWriter) {
        if !ports.isEmpty { m.entry("ports") { w in w.arrayHeader(count: ports.count); for p in ports { w.unsigned(UInt64(p)) } } }
        if !http.isEmpty {
            m.entry("http") { w in
                w.arrayHeader(count: http.count)
                for probe in http { w.map { p in p.entry("host", probe.host); p.entry("port", probe.port); p.entry("path", probe.path) } }
            }
        }
        if !logs.isEmpty { m.entry("logs", logs) }
        if !files.isEmpty { m.entry("files", files) }
        if !execs.isEmpty { m.entry("execs") { w in w.arrayHeader(count: execs.count); for argv in execs { w.value(.array(argv.map { .text($0) })) } } }
    }

    init(from r: MessageReader) throws(MessageError) {
        ports = []
        for item in try r.optionalArray("ports") ?? [] { ports.append(try MessageReader.integer(item, key: r.name("ports"))) }
        http = []
        for item in try r.optionalArray("http") ?? [] {
            guard case .map(let map) = item else { throw .wrongType(key: r.name("http"), expected: "an array of maps", found: item.typeName) }
            let p = MessageReader(map, path: r.name("http"))
            http.append(HTTPProbe(host: try p.optionalText("host") ?? "127.0.0.1", port: try p.integer("port"), path: try p.optionalText("path") ?? "/"))
        }
        logs = try r.optionalTextArray("logs") ?? []
        files = try r.optionalTextArray("files") ?? []
        execs = []
        for item in try r.optionalArray("execs") ?? [] {
            guard case .array(let words) = item else { throw .wrongType(key: r.name("execs"), expected: "an array of argv arrays", found: item.typeName) }
            var argv: [String] = []
            for word in words {
                guard case .text(let text) = word else { throw .wrongType(key: r.name("execs"), expected: "argv of text", found: word.typeName) }
                argv.append(text)
            }
            guard !argv.isEmpty else { throw .invalidValue(key: r.name("execs"), reason: "an empty argv") }
            execs.append(argv)
        }
    }
}

extension MessageReader {
    /// An optional array value.
    func optionalArray(_ key: String) throws(MessageError) -> [CBORValue]? {
        guard let value = optionalValue(key) else { return nil }
        guard case .array(let items) = value else { throw .wrongType(key: name(key), expected: "an array", found: value.typeName) }
        return items
    }

    func optionalByteString(_ key: String) throws(MessageError) -> [UInt8]? {
        guard let value = optionalValue(key) else { return nil }
        guard case .bytes(let bytes) = value else { throw .wrongType(key: name(key), expected: "a byte string", found: value.typeName) }
        return bytes
    }
}

/// Where a named process is in its life.
public enum ProcessState: String, Hashable, Sendable, CaseIterable {
    /// Spawned (or waiting to be restarted); its readiness conditions do not all hold yet.
    case starting
    /// Running without conditions, or still running after its conditions timed out.
    case running
    /// Running, and every readiness condition held.
    case ready
    /// Exited with code 0.
    case exited
    /// Ended by a signal sent through `processSignal`.
    case killed
    /// Exited non-zero, was killed by a signal nobody sent through tether, or never started;
    /// with a restart policy, once no restart is left.
    case failed

    /// Will not run again (unless it is started anew under its name after `processRemove`).
    public var isFinal: Bool { self == .exited || self == .killed || self == .failed }
}

/// One named process, as `processTable`, `processReady` and `processEnded` report it.
public struct ProcessEntry: Hashable, Sendable {
    public var name: String
    /// The agent's number of its current (or last) exec session.
    public var session: UInt32
    public var pid: Int32
    public var state: ProcessState
    public var argv: [String]
    /// Restarts so far under its restart policy.
    public var restarts: UInt32
    /// CLOCK_REALTIME of the current run's start, in ns since the epoch.
    public var startedNs: UInt64
    /// CLOCK_REALTIME when every condition first held in the current run.
    public var readyNs: UInt64?
    /// The last run's end, once it ended.
    public var exited: Exited?
    /// The oldest offset the log still holds, and the offset after its newest byte.
    public var logStart: UInt64
    public var logEnd: UInt64
    /// Bytes of output the log no longer holds (logStart, as a count of what was dropped).
    public var droppedBytes: UInt64 { logStart }

    public init(name: String, session: UInt32, pid: Int32, state: ProcessState, argv: [String], restarts: UInt32,
                startedNs: UInt64, readyNs: UInt64? = nil, exited: Exited? = nil, logStart: UInt64 = 0, logEnd: UInt64 = 0) {
        self.name = name
        self.session = session
        self.pid = pid
        self.state = state
        self.argv = argv
        self.restarts = restarts
        self.startedNs = startedNs
        self.readyNs = readyNs
        self.exited = exited
        self.logStart = logStart
        self.logEnd = logEnd
    }

    func encode(to w: inout CBORWriter) {
        w.map { m in
            m.entry("name", name)
            m.entry("session", session)
            m.entry("pid", pid)
            m.entry("state", state.rawValue)
            m.entry("argv", argv)
            m.entry("restarts", restarts)
            m.entry("startedNs", startedNs)
            m.entry("readyNs", readyNs)
            if let exited { m.entry("exited") { w in exited.encode(to: &w) } }
            m.entry("logStart", logStart)
            m.entry("logEnd", logEnd)
        }
    }

    init(from r: MessageReader) throws(MessageError) {
        name = try r.text("name")
        session = try r.optionalInteger("session") ?? 0
        pid = try r.optionalInteger("pid") ?? 0
        let stateName = try r.text("state")
        guard let state = ProcessState(rawValue: stateName) else {
            throw .invalidValue(key: r.name("state"), reason: "unknown state '\(stateName)'")
        }
        self.state = state
        argv = try r.optionalTextArray("argv") ?? []
        restarts = try r.optionalInteger("restarts") ?? 0
        startedNs = try r.optionalInteger("startedNs") ?? 0
        readyNs = try r.optionalInteger("readyNs")
        exited = try r.optionalReader("exited").map { (e) throws(MessageError) in try Exited(from: e) }
        logStart = try r.optionalInteger("logStart") ?? 0
        logEnd = try r.optionalInteger("logEnd") ?? 0
    }

    static func required(_ r: MessageReader, _ key: String) throws(MessageError) -> ProcessEntry {
        guard let reader = try r.optionalReader(key) else { throw .missingKey(r.name(key)) }
        return try ProcessEntry(from: reader)
    }
}

/// Process names: what `tether proc` takes on a command line and a log line can show.
public enum ProcessName {
    public static let maxBytes = 64

    /// Why `name` is not a process name, or nil when it is one: 1-64 bytes of letters, digits,
    /// `.`, `_` and `-`, not starting with `-`.
    public static func problem(_ name: String) -> String? {
        if name.isEmpty { return "a process name cannot be empty" }
        if name.utf8.count > maxBytes { return "a process name is at most \(maxBytes) bytes" }
        if name.hasPrefix("-") { return "a process name cannot start with '-'" }
        let allowed = name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x2E || byte == 0x5F || byte == 0x2D
        }
        return allowed ? nil : "a process name holds only letters, digits, '.', '_' and '-'"
    }
}
