import Synchronization
import TetherPosix
import TetherProtocol

/// The async Swift client of a Tether relay (ARCHITECTURE.md, "The path of one exec").
///
///     let client = try await TetherClient.connect(to: "unix:/run/sandbox/relay.sock")
///     let output = try await client.exec(["uname", "-a"])
///     print(output.stdoutText, output.exitCode)
///
/// One connection, with its own I/O thread; many sessions run on it at once. If the
/// connection drops, the next call opens a new one. Transient failures (the relay socket not
/// there yet, the relay's agent not ready yet) are retried with capped exponential backoff
/// within `ClientOptions.retryBudget`; nothing else is retried.
public final class TetherClient: Sendable {
    public let options: ClientOptions
    private let current: Mutex<RelayConnection?>

    private init(options: ClientOptions, connection: RelayConnection) {
        self.options = options
        self.current = Mutex(connection)
    }

    deinit { current.withLock { $0?.close() } }

    /// Connects to the relay at `socket` (`unix:PATH`), retrying while it is not there yet.
    public static func connect(to socket: String, name: String = "tether-client") async throws(TetherError) -> TetherClient {
        let address: Address
        do { address = try Address(parsing: socket) } catch {
            throw TetherError(.invalidArgument, "\(socket) is not an address: \(error)", operation: "connect",
                              suggestion: "use unix:PATH")
        }
        var options = ClientOptions(socket: address)
        options.name = name
        return try await connect(options)
    }

    public static func connect(_ options: ClientOptions) async throws(TetherError) -> TetherClient {
        let connection = try await Retry(options, operation: "connect").run { () async throws(TetherError) -> RelayConnection in
            try await RelayConnection.open(options.socket, name: options.name, helloTimeout: options.helloTimeout, onNotice: options.onNotice,
                                          agentTimeout: options.agentTimeout)
        }
        return TetherClient(options: options, connection: connection)
    }

    /// The hello of whoever serves the socket: for a relay, role `relay` with its agent's
    /// capabilities and `agentVersion`.
    public var serverHello: Hello? { current.withLock { $0?.hello } }

    /// Closes the connection; running non-detached sessions are killed by the relay.
    public func close() { current.withLock { $0?.close() } }

    func connection() async throws(TetherError) -> RelayConnection {
        if let live = current.withLock({ $0.flatMap { $0.isClosed ? nil : $0 } }) { return live }
        let fresh = try await Retry(options, operation: "connect").run { () async throws(TetherError) -> RelayConnection in
            try await RelayConnection.open(options.socket, name: options.name, helloTimeout: options.helloTimeout, onNotice: options.onNotice,
                                          agentTimeout: options.agentTimeout)
        }
        current.withLock { $0 = fresh }
        return fresh
    }

    // MARK: exec

    /// Runs a program to its end and returns its output. A non-zero exit is a result.
    ///
    /// A program its timeout ended is not a result but `timedOut`, carrying the limit
    /// (`context["timeoutMs"]`), how it ended and the end of its output.
    public func exec(_ argv: [String], _ options: ExecOptions = ExecOptions()) async throws(TetherError) -> ExecOutput {
        try Self.failIfTimedOut(try await execStream(argv, options).collect(), argv: argv.joined(separator: " "),
                                timeoutMs: options.timeout?.milliseconds)
    }

    public func exec(_ request: ExecRequest) async throws(TetherError) -> ExecOutput {
        try Self.failIfTimedOut(try await execStream(request).collect(), argv: request.argv.map(\.description).joined(separator: " "),
                                timeoutMs: request.timeoutMs)
    }

    static func failIfTimedOut(_ output: ExecOutput, argv: String, timeoutMs: UInt64?) throws(TetherError) -> ExecOutput {
        guard output.status.timedOut else { return output }
        let limit = timeoutMs.map { Duration.describe(milliseconds: $0) } ?? "its timeout"
        var context = ["argv": argv, "exit": output.status.description]
        if let timeoutMs { context["timeoutMs"] = String(timeoutMs) }
        let tail = { (bytes: [UInt8]) in String(decoding: bytes.suffix(4096), as: UTF8.self) }
        if !output.stdout.isEmpty { context["stdoutTail"] = tail(output.stdout) }
        if !output.stderr.isEmpty { context["stderrTail"] = tail(output.stderr) }
        throw TetherError(.timedOut, "the command timed out after \(limit) (\(output.status.ending))", operation: "exec", context: context,
                          suggestion: "raise its timeout, or make it finish sooner")
    }

    /// Starts a program and returns once it started (or throws why it did not). With
    /// `options.tty` it runs on a pseudo-terminal of that size: write keystrokes with
    /// `takeStdin()`, follow the local window with `resize(rows:cols:)`, and `detach()` /
    /// `attach(session:)` to leave it and come back.
    public func execStream(_ argv: [String], _ options: ExecOptions = ExecOptions()) async throws(TetherError) -> ExecHandle {
        guard !argv.isEmpty else { throw TetherError(.invalidArgument, "argv is empty", operation: "exec") }
        return try await execStream(options.request(argv))
    }

    public func execStream(_ request: ExecRequest) async throws(TetherError) -> ExecHandle {
        let context = ["argv": request.argv.map(\.description).joined(separator: " ")]
        let payload = request.cborBytes
        // One frame carries at most 1 MiB: say so here rather than trap in the frame encoder.
        guard payload.count <= Frame.maxPayloadBytes else {
            throw TetherError(.invalidArgument, "the exec request is \(payload.count) bytes encoded; one frame carries at most \(Frame.maxPayloadBytes) (argv, env and the rest together)",
                              operation: "exec", context: context)
        }
        return try await Retry(options, operation: "exec").run { () async throws(TetherError) -> ExecHandle in
            let channel = try await connection().startSession(kind: .exec, payload: payload, operation: "exec", context: context)
            channel.widenOutputWindow()
            // Wait for `started` (or the reason there is none); the event stays for `events`.
            let first = try await channel.peek()
            let tty = request.tty != nil
            if case .event(.started(let pid))? = first { return ExecHandle(channel: channel, pid: pid, isTerminal: tty) }
            if case .failed(let error)? = channel.end, first == nil { throw error }
            return ExecHandle(channel: channel, pid: 0, isTerminal: tty)
        }
    }

    /// `/bin/sh -c command`.
    public func shell(_ command: String, _ options: ExecOptions = ExecOptions()) async throws(TetherError) -> ExecOutput {
        try await exec(["/bin/sh", "-c", command], options)
    }

    public func shellStream(_ command: String, _ options: ExecOptions = ExecOptions()) async throws(TetherError) -> ExecHandle {
        try await execStream(["/bin/sh", "-c", command], options)
    }

    // MARK: sessions

    /// Takes over a detached session nobody watches: its buffered output comes first (unless
    /// `replay` is false), then live events. `droppedBytes` says how much older output was lost.
    public func attach(session: UInt32, replay: Bool = true) async throws(TetherError) -> ExecHandle {
        let context = ["session": String(session)]
        let payload = Attach(session: session, replay: replay).cborBytes
        return try await Retry(options, operation: "attach").run { () async throws(TetherError) -> ExecHandle in
            let channel = try await connection().startSession(kind: .attach, payload: payload, operation: "attach", context: context)
            guard let first = try await channel.next() else {
                if case .failed(let error)? = channel.end { throw error }
                throw TetherError(.protocolError, "the session ended before `attached`", operation: "attach", context: context)
            }
            guard case .attached(let attached) = first else {
                throw TetherError(.protocolError, "expected `attached`, got another frame", operation: "attach", context: context)
            }
            return ExecHandle(channel: channel, pid: attached.pid, session: attached.session, droppedBytes: attached.droppedBytes,
                              isTerminal: attached.tty)
        }
    }

    /// The sessions the relay knows: running, detached, or finished and not yet picked up.
    public func listSessions() async throws(TetherError) -> [SessionInfo] {
        let reply = try await request(kind: .listSessions, payload: ListSessions().cborBytes, operation: "listSessions", context: [:])
        guard let reply, reply.kind == .sessionList else {
            throw TetherError(.protocolError, "expected `sessionList`", operation: "listSessions")
        }
        do { return try reply.decode(SessionList.self).sessions } catch {
            throw TetherError(.protocolError, "sessionList: \(error.description)", operation: "listSessions")
        }
    }

    /// Signals a session by its relay number (from `listSessions`), from any connection.
    public func signal(session: UInt32, _ number: Int32) async throws(TetherError) {
        _ = try await request(kind: .signalSession, payload: SignalSession(session: session, number: number).cborBytes,
                              operation: "signal", context: ["session": String(session), "signal": String(number)])
    }

    /// The round trip to the agent through the relay.
    public func ping() async throws(TetherError) -> Duration {
        try await Retry(options, operation: "ping").run { () async throws(TetherError) -> Duration in
            try await connection().ping()
        }
    }

    /// exec.log from the relay: its lines as they are read (chunks of JSON Lines text, a line
    /// possibly split between chunks). With `follow`, new lines keep coming until the
    /// returned handle is cancelled (`kill()`).
    public func logs(session: UInt32? = nil, follow: Bool = false) async throws(TetherError) -> ExecHandle {
        let context = session.map { ["session": String($0)] } ?? [:]
        let payload = LogsRequest(session: session, follow: follow).cborBytes
        let channel = try await connection().startSession(kind: .logs, payload: payload, operation: "logs", context: context)
        return ExecHandle(channel: channel, pid: 0)
    }

    /// A request session answered by one reply (nil for a bare `done`).
    func request(kind: FrameKind, payload: [UInt8], operation: String, context: [String: String]) async throws(TetherError) -> Frame? {
        try await Retry(options, operation: operation).run { () async throws(TetherError) -> Frame? in
            let channel = try await connection().startSession(kind: kind, payload: payload, operation: operation, context: context)
            var reply: Frame?
            while let item = try await channel.next() {
                if case .reply(let frame) = item, reply == nil { reply = frame }
            }
            if case .failed(let error)? = channel.end { throw error }
            return reply
        }
    }
}

/// Retries transient failures with capped exponential backoff inside a time budget.
struct Retry {
    let budgetNs: UInt64
    let initialNs: UInt64
    let maxNs: UInt64
    let operation: String

    init(_ options: ClientOptions, operation: String) {
        budgetNs = options.retryBudget.nanoseconds
        initialNs = max(1_000_000, options.retryInitialDelay.nanoseconds)
        maxNs = max(initialNs, options.retryMaxDelay.nanoseconds)
        self.operation = operation
    }

    /// The waits between attempts if every attempt failed at once: doubling from the first,
    /// capped, the last one cut to what is left of the budget.
    func delays() -> [UInt64] {
        var result: [UInt64] = []
        var elapsed: UInt64 = 0
        var delay = initialNs
        while elapsed < budgetNs {
            let wait = min(delay, budgetNs - elapsed)
            result.append(wait)
            elapsed += wait
            delay = min(delay * 2, maxNs)
        }
        return result
    }

    func run<T>(_ body: () async throws(TetherError) -> T) async throws(TetherError) -> T {
        let start = Clock.monotonicNs()
        var delay = initialNs
        var attempts = 0
        while true {
            attempts += 1
            do { return try await body() } catch {
                guard error.isTransient else { throw error }
                let elapsed = Clock.monotonicNs() - start
                guard elapsed < budgetNs else {
                    var final = error
                    if attempts > 1 {
                        final.context["attempts"] = String(attempts)
                        final.context["retriedFor"] = "\(elapsed / 1_000_000) ms"
                    }
                    throw final
                }
                // The last wait is cut to what is left, so the final attempt lands in the budget.
                do { try await Task.sleep(nanoseconds: min(delay, budgetNs - elapsed)) } catch {
                    throw TetherError(.cancelled, "cancelled while waiting to retry", operation: operation)
                }
                delay = min(delay * 2, maxNs)
            }
        }
    }
}
