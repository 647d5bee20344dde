import Synchronization
import TetherPosix
import TetherProtocol

/// A named process in the sandbox. Holds no resources of its own beyond the pending start
/// request: every call is a request through the client's connection, so a handle can be
/// made for any name (`Processes.handle`) and outlives reconnections.
public final class BackgroundProcess: Sendable {
    public let name: String
    let client: TetherClient
    /// The `processStart` session until its reply was read; then its outcome.
    private let start: Mutex<StartState>

    enum StartState: Sendable {
        case none
        case pending(SessionChannel)
        case answered(Result<ProcessEntry, TetherError>)
    }

    init(client: TetherClient, name: String, starting channel: SessionChannel?) {
        self.client = client
        self.name = name
        self.start = Mutex(channel.map { .pending($0) } ?? .none)
    }

    private var context: [String: String] { ["name": name] }

    /// Returns once the process runs and every readiness condition held. Throws
    /// `processReadyTimeout` (`context`: condition, elapsedMs, outputTail; the process goes on),
    /// `processExitedBeforeReady` (`context`: exit, outputTail), `processNameInUse`, or
    /// `spawnFailed`. On a handle from `Processes.handle` it asks the agent until the state is
    /// no longer `starting`.
    @discardableResult
    public func waitUntilReady() async throws(TetherError) -> ProcessEntry {
        switch start.withLock({ $0 }) {
        case .answered(let result): return try result.get()
        case .pending(let channel):
            let result = await Self.readStartReply(channel)
            start.withLock { $0 = .answered(result) }
            return try result.get()
        case .none:
            while true {
                let info = try await client.processes.get(name)
                switch info.state {
                case .ready, .running: return info
                case .exited, .killed, .failed:
                    throw TetherError(.remote(.processExitedBeforeReady), "'\(name)' is \(info.state.rawValue)", operation: "processStart",
                                      context: context.merging(Self.exitContext(info.exited)) { $1 })
                case .starting:
                    do { try await Task.sleep(nanoseconds: 20_000_000) } catch {
                        throw TetherError(.cancelled, "cancelled while waiting for '\(name)'", operation: "processStart", context: context)
                    }
                }
            }
        }
    }

    private static func readStartReply(_ channel: SessionChannel) async -> Result<ProcessEntry, TetherError> {
        do {
            while let item = try await channel.next() {
                guard case .reply(let frame) = item else { continue }
                switch frame.kind {
                case .processReady:
                    do { return .success(try frame.decode(ProcessReady.self).process) } catch {
                        return .failure(TetherError(.protocolError, "processReady: \(error.description)", operation: "processStart", context: channel.context))
                    }
                case .processFailed:
                    do { return .failure(notReady(try frame.decode(ProcessFailed.self), context: channel.context)) } catch {
                        return .failure(TetherError(.protocolError, "processFailed: \(error.description)", operation: "processStart", context: channel.context))
                    }
                default:
                    continue
                }
            }
            if case .failed(let error)? = channel.end { return .failure(error) }
            return .failure(TetherError(.protocolError, "processStart ended without an answer", operation: "processStart", context: channel.context))
        } catch {
            return .failure(error)
        }
    }

    /// `processFailed` as the library's error: the code, and the condition, time, exit and
    /// output tail in `context`.
    static func notReady(_ failed: ProcessFailed, context: [String: String]) -> TetherError {
        var context = context.merging(exitContext(failed.exited)) { $1 }
        if let condition = failed.condition { context["condition"] = condition }
        context["elapsedMs"] = String(failed.elapsedMs)
        context["outputTail"] = String(decoding: failed.tail, as: UTF8.self)
        let suggestion = failed.code == .processReadyTimeout
            ? "the process still runs: read its log (tether proc logs \(failed.process.name)), then kill it or raise --wait-timeout"
            : "read its log (tether proc logs \(failed.process.name)); tether proc rm \(failed.process.name) frees the name"
        return TetherError(.remote(failed.code), failed.message, operation: "processStart", context: context, suggestion: suggestion)
    }

    static func exitContext(_ exited: Exited?) -> [String: String] {
        guard let exited else { return [:] }
        var context: [String: String] = [:]
        if let code = exited.code { context["exitCode"] = String(code) }
        if let signal = exited.signal { context["signal"] = String(signal) }
        return context
    }

    /// The process as the agent sees it now.
    public func info() async throws(TetherError) -> ProcessEntry { try await client.processes.get(name) }

    /// The log from `offset` (nil: the oldest byte held), or its last `tail` bytes; with
    /// `follow`, new output as it is written until the process will not run again.
    public func logs(from offset: UInt64? = nil, tail: UInt64? = nil, follow: Bool = false) async throws(TetherError) -> ProcessLogStream {
        let request = ProcessLogs(name: name, from: offset, tail: tail, follow: follow)
        let channel = try await Retry(client.options, operation: "processLogs").run { () async throws(TetherError) -> SessionChannel in
            try await client.connection().startSession(kind: .processLogs, payload: request.cborBytes, operation: "processLogs", context: context)
        }
        return ProcessLogStream(channel: channel)
    }

    /// Sends `number` to the process's group. A process signalled this way that dies of it is
    /// `killed`, and is not restarted.
    public func signal(_ number: Int32) async throws(TetherError) {
        _ = try await client.request(kind: .processSignal, payload: ProcessSignal(name: name, number: number).cborBytes,
                                     operation: "processSignal", context: context.merging(["signal": String(number)]) { $1 })
    }

    /// Waits until the process will not run again (after any restarts) and returns how it ended.
    public func wait() async throws(TetherError) -> ProcessEntry {
        let reply = try await client.request(kind: .processWait, payload: ProcessWait(name: name).cborBytes, operation: "processWait", context: context)
        guard let reply, reply.kind == .processEnded else {
            throw TetherError(.protocolError, "expected `processEnded`", operation: "processWait", context: context)
        }
        do { return try reply.decode(ProcessEnded.self).process } catch {
            throw TetherError(.protocolError, "processEnded: \(error.description)", operation: "processWait", context: context)
        }
    }

    /// Forgets a process that will not run again, and its log (`processRunning` otherwise).
    public func remove() async throws(TetherError) {
        _ = try await client.request(kind: .processRemove, payload: ProcessRemove(name: name).cborBytes, operation: "processRemove", context: context)
    }
}
