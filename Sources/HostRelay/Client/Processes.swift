import TetherPosix
import TetherProtocol

extension TetherClient {
    /// Named background processes in the sandbox (`proc/1`): start one and wait until it is
    /// ready, list them, read their logs from an offset, signal, wait for and remove them.
    public var processes: Processes { Processes(client: self) }
}

/// What `start` takes besides the program: readiness, its timeout, the log's size, restarts.
public struct ProcessOptions: Sendable {
    public var ready: Readiness
    /// How long `waitUntilReady` waits for every condition (the agent gives up then).
    public var waitTimeout: Duration
    /// The log ring's size in bytes (4 KiB ... 64 MiB).
    public var logBytes: UInt64
    /// Restart after a failure at most this many times (nil: never).
    public var maxRestarts: UInt32?

    public init(ready: Readiness = Readiness(), waitTimeout: Duration = .milliseconds(Int64(ProcessStart.defaultWaitTimeoutMs)),
                logBytes: UInt64 = ProcessStart.defaultLogBytes, maxRestarts: UInt32? = nil) {
        self.ready = ready
        self.waitTimeout = waitTimeout
        self.logBytes = logBytes
        self.maxRestarts = maxRestarts
    }
}

/// The named processes of one sandbox, through the client's relay connection.
public struct Processes: Sendable {
    let client: TetherClient

    /// Starts `argv` under `name` and returns at once; `waitUntilReady()` on the handle returns
    /// when every condition held (at once without conditions), or throws why not:
    /// `processNameInUse`, `processReadyTimeout`, `processExitedBeforeReady`, `spawnFailed`.
    public func start(_ name: String, _ argv: [String], _ exec: ExecOptions = ExecOptions(),
                      _ options: ProcessOptions = ProcessOptions()) async throws(TetherError) -> BackgroundProcess {
        guard !argv.isEmpty else { throw TetherError(.invalidArgument, "argv is empty", operation: "processStart") }
        var request = exec.request(argv)
        request.detach = true
        return try await start(ProcessStart(name: name, exec: request, ready: options.ready, waitTimeoutMs: options.waitTimeout.milliseconds,
                                            logBytes: options.logBytes, maxRestarts: options.maxRestarts))
    }

    public func start(_ request: ProcessStart) async throws(TetherError) -> BackgroundProcess {
        let context = ["name": request.name, "argv": request.exec.argv.map(\.description).joined(separator: " ")]
        if let problem = ProcessName.problem(request.name) {
            throw TetherError(.invalidArgument, problem, operation: "processStart", context: context)
        }
        let payload = request.cborBytes
        guard payload.count <= Frame.maxPayloadBytes else {
            throw TetherError(.invalidArgument, "the request is \(payload.count) bytes encoded; one frame carries at most \(Frame.maxPayloadBytes)",
                              operation: "processStart", context: context)
        }
        let channel = try await Retry(client.options, operation: "processStart").run { () async throws(TetherError) -> SessionChannel in
            try await client.connection().startSession(kind: .processStart, payload: payload, operation: "processStart", context: context)
        }
        return BackgroundProcess(client: client, name: request.name, starting: channel)
    }

    /// A handle on a process that exists already (started earlier, by anyone).
    public func handle(_ name: String) -> BackgroundProcess { BackgroundProcess(client: client, name: name, starting: nil) }

    /// Every process, sorted by name.
    public func list() async throws(TetherError) -> [ProcessEntry] {
        try await table(ProcessList(), context: [:])
    }

    /// One process; `processNotFound` when there is none by that name.
    public func get(_ name: String) async throws(TetherError) -> ProcessEntry {
        guard let info = try await table(ProcessList(name: name), context: ["name": name]).first else {
            throw TetherError(.remote(.processNotFound), "no process named '\(name)'", operation: "processList", context: ["name": name])
        }
        return info
    }

    private func table(_ request: ProcessList, context: [String: String]) async throws(TetherError) -> [ProcessEntry] {
        let reply = try await client.request(kind: .processList, payload: request.cborBytes, operation: "processList", context: context)
        guard let reply, reply.kind == .processTable else {
            throw TetherError(.protocolError, "expected `processTable`", operation: "processList", context: context)
        }
        do { return try reply.decode(ProcessTable.self).processes } catch {
            throw TetherError(.protocolError, "processTable: \(error.description)", operation: "processList", context: context)
        }
    }
}

/// One piece of a process's log: bytes of one stream, and the offset of their first byte in
/// the log. A reader that keeps `nextOffset` of the last chunk resumes there (`logs(from:)`)
/// with no gap and no duplicate while the log still holds it.
public struct ProcessLogChunk: Sendable, Hashable {
    public enum Stream: String, Sendable, Hashable { case stdout, stderr }
    public var offset: UInt64
    public var stream: Stream
    public var bytes: [UInt8]
    /// Bytes before `offset` that were asked for and are no longer held (dropped by the ring).
    public var droppedBefore: UInt64
    public var nextOffset: UInt64 { offset + UInt64(bytes.count) }
}

/// A process's log as it is read (see `BackgroundProcess.logs`). Ends at the end of the log, or
/// with `follow` once the process will not run again; `cancel()` ends it earlier.
public struct ProcessLogStream: AsyncSequence, Sendable {
    public typealias Element = ProcessLogChunk
    public typealias Failure = TetherError
    let channel: SessionChannel

    /// Stops following (the agent sends `done`).
    public func cancel() { channel.connection.send(Frame(id: channel.id, kind: .kill, payload: KillRequest().cborBytes), for: channel) }

    public func makeAsyncIterator() -> Iterator { Iterator(channel: channel) }

    public struct Iterator: AsyncIteratorProtocol {
        let channel: SessionChannel
        var offset: UInt64 = 0
        var dropped: UInt64 = 0

        public mutating func next() async throws(TetherError) -> ProcessLogChunk? {
            while let item = try await channel.next() {
                switch item {
                case .reply(let frame) where frame.kind == .processLogPosition:
                    guard let position = try? frame.decode(ProcessLogPosition.self) else {
                        throw TetherError(.protocolError, "processLogPosition is undecodable", operation: channel.operation, context: channel.context)
                    }
                    offset = position.offset
                    dropped += position.droppedBytes
                case .event(.stdout(let bytes)), .event(.stderr(let bytes)):
                    let stream: ProcessLogChunk.Stream
                    if case .event(.stdout) = item { stream = .stdout } else { stream = .stderr }
                    let chunk = ProcessLogChunk(offset: offset, stream: stream, bytes: bytes, droppedBefore: dropped)
                    offset += UInt64(bytes.count)
                    dropped = 0
                    return chunk
                default:
                    continue
                }
            }
            if case .failed(let error)? = channel.end { throw error }
            return nil
        }
    }
}
