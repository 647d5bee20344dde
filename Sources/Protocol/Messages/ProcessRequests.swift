// The payloads of the background-process kinds (0x50-0x5F); see ProcessMessages.swift.

/// `processStart{name, exec, ready?, waitTimeoutMs?, logBytes?, restart?}` (START).
public struct ProcessStart: Message {
    public static let kind = FrameKind.processStart
    /// Readiness is given up after this long when the request names none.
    public static let defaultWaitTimeoutMs: UInt64 = 60_000
    /// The log ring's size when the request names none, and the largest it may name.
    public static let defaultLogBytes: UInt64 = 4 << 20
    public static let maxLogBytes: UInt64 = 64 << 20
    public static let minLogBytes: UInt64 = 4 << 10

    public var name: String
    /// The program, as for `exec` (its `detach` is ignored: a process always outlives its client;
    /// `tty` and `stdin: "pipe"` are refused).
    public var exec: ExecRequest
    public var ready: Readiness
    public var waitTimeoutMs: UInt64
    public var logBytes: UInt64
    /// `restart: {maxRestarts}`: restart on failure (exit non-zero or a signal nobody sent
    /// through tether) at most this many times, with a backoff. nil: never restart.
    public var maxRestarts: UInt32?

    public init(name: String, exec: ExecRequest, ready: Readiness = Readiness(), waitTimeoutMs: UInt64 = ProcessStart.defaultWaitTimeoutMs,
                logBytes: UInt64 = ProcessStart.defaultLogBytes, maxRestarts: UInt32? = nil) {
        self.name = name
        self.exec = exec
        self.ready = ready
        self.waitTimeoutMs = waitTimeoutMs
        self.logBytes = logBytes
        self.maxRestarts = maxRestarts
    }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("name", name)
        map.entry("exec") { w in w.map { m in exec.encode(to: &m) } }
        if !ready.isEmpty { map.entry("ready") { w in w.map { m in ready.encode(to: &m) } } }
        map.entry("waitTimeoutMs", waitTimeoutMs)
        map.entry("logBytes", logBytes)
        if let maxRestarts { map.entry("restart") { w in w.map { m in m.entry("maxRestarts", maxRestarts) } } }
    }

    public init(from r: MessageReader) throws(MessageError) {
        name = try r.text("name")
        if let problem = ProcessName.problem(name) { throw .invalidValue(key: "name", reason: problem) }
        guard let exec = try r.optionalReader("exec") else { throw .missingKey("exec") }
        self.exec = try ExecRequest(from: exec)
        ready = try r.optionalReader("ready").map { (m) throws(MessageError) in try Readiness(from: m) } ?? Readiness()
        waitTimeoutMs = try r.optionalInteger("waitTimeoutMs") ?? Self.defaultWaitTimeoutMs
        logBytes = try r.optionalInteger("logBytes") ?? Self.defaultLogBytes
        guard logBytes >= Self.minLogBytes && logBytes <= Self.maxLogBytes else {
            throw .invalidValue(key: "logBytes", reason: "\(logBytes) is outside \(Self.minLogBytes) ... \(Self.maxLogBytes)")
        }
        if let restart = try r.optionalReader("restart") {
            maxRestarts = try restart.optionalInteger("maxRestarts") ?? UInt32.max
        } else {
            maxRestarts = nil
        }
    }
}

/// `processReady{process}` (END): the process runs and every condition held.
public struct ProcessReady: Message {
    public static let kind = FrameKind.processReady
    public var process: ProcessEntry
    public init(process: ProcessEntry) { self.process = process }
    public func encode(to map: inout CBORWriter.MapWriter) { map.entry("process") { w in process.encode(to: &w) } }
    public init(from r: MessageReader) throws(MessageError) { process = try ProcessEntry.required(r, "process") }
}

/// `processFailed{code, message, condition?, elapsedMs, exited?, tail, process}` (END): the
/// process did not become ready. `code` is `processReadyTimeout` (the conditions did not all hold
/// within `waitTimeoutMs`; `condition` names the first that did not, and the process goes on) or
/// `processExitedBeforeReady` (`exited` says how; no restart was left).
public struct ProcessFailed: Message {
    public static let kind = FrameKind.processFailed
    /// Output kept for the error: the last this many bytes of the log.
    public static let tailBytes = 4096

    public var code: ErrorCode
    public var message: String
    public var condition: String?
    public var elapsedMs: UInt64
    public var exited: Exited?
    /// The last `tailBytes` of the process's output (stdout and stderr, interleaved).
    public var tail: [UInt8]
    public var process: ProcessEntry

    public init(code: ErrorCode, message: String, condition: String? = nil, elapsedMs: UInt64, exited: Exited? = nil,
                tail: [UInt8], process: ProcessEntry) {
        self.code = code
        self.message = message
        self.condition = condition
        self.elapsedMs = elapsedMs
        self.exited = exited
        self.tail = tail
        self.process = process
    }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("code", code.rawValue)
        map.entry("message", message)
        map.entry("condition", condition)
        map.entry("elapsedMs", elapsedMs)
        if let exited { map.entry("exited") { w in exited.encode(to: &w) } }
        map.entry("tail") { w in w.byteString(tail) }
        map.entry("process") { w in process.encode(to: &w) }
    }

    public init(from r: MessageReader) throws(MessageError) {
        code = ErrorCode(rawValue: try r.text("code"))
        message = try r.optionalText("message") ?? ""
        condition = try r.optionalText("condition")
        elapsedMs = try r.optionalInteger("elapsedMs") ?? 0
        exited = try r.optionalReader("exited").map { (e) throws(MessageError) in try Exited(from: e) }
        tail = try r.optionalByteString("tail") ?? []
        process = try ProcessEntry.required(r, "process")
    }
}

/// `processList{name?}` (START): every process, or the one named.
public struct ProcessList: Message {
    public static let kind = FrameKind.processList
    public var name: String?
    public init(name: String? = nil) { self.name = name }
    public func encode(to map: inout CBORWriter.MapWriter) { map.entry("name", name) }
    public init(from r: MessageReader) throws(MessageError) { name = try r.optionalText("name") }
}

/// `processTable{processes}` (END), sorted by name.
public struct ProcessTable: Message {
    public static let kind = FrameKind.processTable
    public var processes: [ProcessEntry]
    public init(processes: [ProcessEntry]) { self.processes = processes }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("processes") { w in
            w.arrayHeader(count: processes.count)
            for process in processes { process.encode(to: &w) }
        }
    }

    public init(from r: MessageReader) throws(MessageError) {
        processes = []
        for item in try r.optionalArray("processes") ?? [] {
            guard case .map(let map) = item else { throw .wrongType(key: "processes", expected: "an array of maps", found: item.typeName) }
            processes.append(try ProcessEntry(from: MessageReader(map, path: "processes")))
        }
    }
}

/// `processLogs{name, from?, tail?, follow?}` (START). The reply is a `processLogPosition`, then
/// the log as `stdout`/`stderr` data frames (flow-controlled like output), a new position
/// whenever the reader fell behind what the ring still holds, and `done` (END): at once without
/// `follow`, else once the process will not run again and everything was sent, or on `kill{}`.
public struct ProcessLogs: Message {
    public static let kind = FrameKind.processLogs
    public var name: String
    /// Start at this absolute offset (clamped to what the log holds).
    public var from: UInt64?
    /// Start this many bytes before the end (with neither, from the oldest byte held).
    public var tail: UInt64?
    public var follow: Bool

    public init(name: String, from: UInt64? = nil, tail: UInt64? = nil, follow: Bool = false) {
        self.name = name
        self.from = from
        self.tail = tail
        self.follow = follow
    }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("name", name)
        map.entry("from", from)
        map.entry("tail", tail)
        map.entry("follow", follow)
    }

    public init(from r: MessageReader) throws(MessageError) {
        name = try r.text("name")
        from = try r.optionalInteger("from")
        tail = try r.optionalInteger("tail")
        if from != nil && tail != nil { throw .invalidValue(key: "tail", reason: "give 'from' or 'tail', not both") }
        follow = try r.optionalBool("follow") ?? false
    }
}

/// `processLogPosition{offset, droppedBytes}`: the next data byte on this id is the log's byte
/// `offset`; `droppedBytes` of what was asked for are no longer held (skipped).
public struct ProcessLogPosition: Message {
    public static let kind = FrameKind.processLogPosition
    public var offset: UInt64
    public var droppedBytes: UInt64
    public init(offset: UInt64, droppedBytes: UInt64 = 0) {
        self.offset = offset
        self.droppedBytes = droppedBytes
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("offset", offset)
        map.entry("droppedBytes", droppedBytes)
    }
    public init(from r: MessageReader) throws(MessageError) {
        offset = try r.integer("offset")
        droppedBytes = try r.optionalInteger("droppedBytes") ?? 0
    }
}

/// `processSignal{name, number}` (START): the signal to the process's group; `done` (END).
public struct ProcessSignal: Message {
    public static let kind = FrameKind.processSignal
    public var name: String
    public var number: Int32
    public init(name: String, number: Int32) {
        self.name = name
        self.number = number
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("name", name)
        map.entry("number", number)
    }
    public init(from r: MessageReader) throws(MessageError) {
        name = try r.text("name")
        number = try r.integer("number")
        guard (1...64).contains(number) else { throw .invalidValue(key: "number", reason: "\(number) is not a signal number (1-64)") }
    }
}

/// `processWait{name}` (START): answered `processEnded` once the process will not run again.
public struct ProcessWait: Message {
    public static let kind = FrameKind.processWait
    public var name: String
    public init(name: String) { self.name = name }
    public func encode(to map: inout CBORWriter.MapWriter) { map.entry("name", name) }
    public init(from r: MessageReader) throws(MessageError) { name = try r.text("name") }
}

/// `processEnded{process}` (END).
public struct ProcessEnded: Message {
    public static let kind = FrameKind.processEnded
    public var process: ProcessEntry
    public init(process: ProcessEntry) { self.process = process }
    public func encode(to map: inout CBORWriter.MapWriter) { map.entry("process") { w in process.encode(to: &w) } }
    public init(from r: MessageReader) throws(MessageError) { process = try ProcessEntry.required(r, "process") }
}

/// `processRemove{name}` (START): forgets a process that will not run again, and its log; `done`.
/// A process still running is refused with `processRunning`.
public struct ProcessRemove: Message {
    public static let kind = FrameKind.processRemove
    public var name: String
    public init(name: String) { self.name = name }
    public func encode(to map: inout CBORWriter.MapWriter) { map.entry("name", name) }
    public init(from r: MessageReader) throws(MessageError) { name = try r.text("name") }
}
