#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// The background-process subsystem (`proc/1`, kinds 0x50-0x5F): named processes with a log,
/// readiness conditions and a restart policy.
///
/// A subsystem of its own rather than more of `AgentExec`: its tables (names, logs, requests
/// waiting for readiness, an end or more log) and its kinds are its own, while every run of a
/// process is an ordinary detached exec session that `AgentExec` spawns, reaps, lists and lets
/// clients attach to (`startUnwatched`). A process therefore lives exactly as long as the agent,
/// whatever happens to the relay or the client that started it.
///
/// Owns every `ManagedProcess` (until `processRemove`) and every request on an id of the link:
/// a start waiting for readiness, a wait for the end, a log reader. Lives on the agent's loop
/// thread. Frames go out only from loop turns of their own (`loop.soon`), never from inside a
/// session's read, where the link may be in the middle of writing a frame.
final class AgentProcesses: AgentSubsystem, ManagedProcessOwner {
    /// Named processes kept at most (running or ended and not removed).
    static let maxProcesses = 256
    /// The logs of all processes together may grow to at most this (each grows as output comes).
    static let maxTotalLogBytes: UInt64 = 256 << 20
    /// The first restart waits this long, each next one twice as long, up to `maxBackoff`.
    static let firstBackoff = Duration.milliseconds(100)
    static let maxBackoffMs: UInt64 = 5_000
    /// `--wait-exec` commands are given this long before their group is killed.
    static let execProbeTimeoutMs: UInt64 = 10_000

    enum Request {
        /// `processStart` waiting for readiness; the timer gives up at `waitTimeoutMs`.
        case start(ManagedProcess, deadline: TimerID?)
        case wait(ManagedProcess)
        case logs(ProcessLogReader)
    }

    let loop: EventLoop
    let exec: AgentExec
    var processes: [String: ManagedProcess] = [:]
    var requests: [UInt32: Request] = [:]
    /// The link requests are answered on (the agent has one at a time).
    weak var link: FramedConnection?
    private var pumpScheduled = false

    init(loop: EventLoop, exec: AgentExec) {
        self.loop = loop
        self.exec = exec
    }

    // MARK: AgentSubsystem

    let startKinds: [FrameKind] = [.processStart, .processList, .processLogs, .processSignal, .processWait, .processRemove]

    func start(_ frame: FrameView, on link: FramedConnection) throws(RequestError) {
        self.link = link
        let id = frame.header.id
        switch frame.header.kind {
        case .processStart: try startProcess(ProcessStart(frame, as: "processStart"), id: id)
        case .processList:
            let request = try ProcessList(frame, as: "processList")
            let listed = try request.name.map { (name) throws(RequestError) in [try named(name)] } ?? Array(processes.values)
            link.send(ProcessTable(processes: listed.sorted { $0.name < $1.name }.map(\.info)), id: id, flags: .end)
        case .processLogs: try startLogs(ProcessLogs(frame, as: "processLogs"), id: id)
        case .processSignal:
            let request = try ProcessSignal(frame, as: "processSignal")
            try signal(try named(request.name), request.number)
            link.send(Done(), id: id, flags: .end)
        case .processWait:
            let process = try named(try ProcessWait(frame, as: "processWait").name)
            if process.state.isFinal && process.restartTimer == nil {
                link.send(ProcessEnded(process: process.info), id: id, flags: .end)
            } else {
                requests[id] = .wait(process)
            }
        case .processRemove:
            try remove(try named(try ProcessRemove(frame, as: "processRemove").name))
            link.send(Done(), id: id, flags: .end)
        default:
            throw RequestError(.unknownKind, "kind \(frame.header.kind) cannot start a session")
        }
    }

    func holds(_ id: UInt32) -> Bool { requests[id] != nil }

    func handle(_ frame: FrameView, on link: FramedConnection) throws(RequestError) {
        let id = frame.header.id
        guard let request = requests[id] else { return }
        switch frame.header.kind {
        case .ack:
            guard case .logs(let reader) = request else { return }
            reader.grant(bytes: try Ack(frame, as: "ack").bytes)
            pump(reader)
        case .kill:
            // The client stops following logs or waiting (a start goes on without its waiter).
            _ = try KillRequest(frame, as: "kill")
            finish(id)
        default:
            throw RequestError(.unknownKind, "kind \(frame.header.kind) is not valid on a process request")
        }
    }

    func abandon(_ id: UInt32) { forget(id) }

    func linkClosed(_ link: FramedConnection) {
        for id in Array(requests.keys) { forget(id) }
        self.link = nil
    }

    func linkDrained(_ link: FramedConnection) { pumpAllReaders() }

    // MARK: requests

    func named(_ name: String) throws(RequestError) -> ManagedProcess {
        guard let process = processes[name] else { throw RequestError(.processNotFound, "no process named '\(name)'") }
        return process
    }

    /// Ends a request from the agent's side: `done` (END), out of the table.
    func finish(_ id: UInt32) {
        guard requests[id] != nil else { return }
        forget(id)
        link?.send(Done(), id: id, flags: .end)
    }

    /// Out of the table, nothing sent.
    private func forget(_ id: UInt32) {
        guard let request = requests.removeValue(forKey: id) else { return }
        if case .start(_, let deadline?) = request { loop.cancel(deadline) }
    }

    private func reply<M: Message>(_ message: M, id: UInt32) {
        forget(id)
        link?.send(message, id: id, flags: .end)
    }

    private func startProcess(_ request: ProcessStart, id: UInt32) throws(RequestError) {
        guard processes[request.name] == nil else {
            throw RequestError(.processNameInUse, "a process named '\(request.name)' exists (tether proc rm \(request.name) forgets an ended one)")
        }
        guard processes.count < Self.maxProcesses else {
            throw RequestError(.limitReached, "\(Self.maxProcesses) processes exist already; remove some (tether proc rm)")
        }
        let logTotal = processes.values.reduce(UInt64(0)) { $0 + UInt64($1.log.capacity) }
        guard logTotal + request.logBytes <= Self.maxTotalLogBytes else {
            throw RequestError(.limitReached, "the logs of all processes may hold \(Self.maxTotalLogBytes >> 20) MiB together; "
                               + "\(logTotal >> 20) MiB are taken (remove ended processes, or ask for a smaller logBytes)")
        }
        guard request.exec.tty == nil else { throw RequestError(.badPayload, "processStart: exec.tty: a process has no terminal") }
        guard request.exec.stdin == .none else { throw RequestError(.badPayload, "processStart: exec.stdin: a process reads no stdin") }
        let process = ManagedProcess(request: request, conditions: try Self.conditions(request.ready))
        process.owner = self
        try run(process)
        processes[process.name] = process
        let deadline = process.conditions.isEmpty ? nil : loop.schedule(after: .milliseconds(Int64(clamping: request.waitTimeoutMs))) {
            [weak self] in self?.readyTimedOut(id: id)
        }
        requests[id] = .start(process, deadline: deadline)
    }

    /// The request's conditions, checked and compiled (a bad expression or host is refused).
    static func conditions(_ ready: Readiness) throws(RequestError) -> [ReadinessWatch.Condition] {
        var result: [ReadinessWatch.Condition] = ready.ports.map { .port($0) }
        for probe in ready.http {
            guard ReadinessProbes.address(of: probe) != nil else {
                throw RequestError(.badPayload, "ready.http: host '\(probe.host)' is not an IP address or localhost")
            }
            result.append(.http(probe))
        }
        for source in ready.logs { result.append(.log(try LogPattern(source))) }
        result += ready.files.map { .file($0) }
        result += ready.execs.map { .exec($0) }
        return result
    }

    /// Spawns a run. A refusal (shutting down, too many sessions) is thrown; a program that
    /// does not start is reported to `processFailedToStart`.
    private func run(_ process: ManagedProcess) throws(RequestError) {
        var request = process.request.exec
        request.detach = true
        switch try exec.startUnwatched(request, tap: process) {
        case .success(let session):
            process.runStarted(session)
            process.watch = process.conditions.isEmpty ? nil : watch(for: process)
        case .failure(let failure):
            loop.soon { [weak self, weak process] in
                guard let self, let process else { return }
                processFailedToStart(process, failure)
            }
        }
    }

    private func watch(for process: ManagedProcess) -> ReadinessWatch {
        let exec = self.exec
        let template = process.request.exec
        let watch = ReadinessWatch(loop: loop, conditions: process.conditions) { argv, done in
            var request = template
            request.argv = argv.map { OSString($0) }
            request.detach = false
            request.timeoutMs = Self.execProbeTimeoutMs
            let probe = ExecProbe(done: done)
            guard case .success(let session)? = try? exec.startUnwatched(request, tap: probe) else { return nil }
            probe.attach(session)
            return probe
        }
        watch.onReady = { [weak self, weak process] in
            guard let self, let process else { return }
            processBecameReady(process)
        }
        return watch
    }

    private func readyTimedOut(id: UInt32) {
        guard case .start(let process, _)? = requests[id] else { return }
        requests[id] = .start(process, deadline: nil)
        let condition = process.watch?.firstPending?.description
        // The process goes on (its log may say why); only the waiting is given up.
        process.watch?.stop()
        process.watch = nil
        if process.state == .starting { process.state = .running }
        let elapsed = (Clock.monotonicNs() - process.runStartedMonotonicNs) / 1_000_000
        reply(ProcessFailed(code: .processReadyTimeout,
                            message: "'\(process.name)' was not ready after \(elapsed) ms: \(condition ?? "a condition") did not hold",
                            condition: condition, elapsedMs: elapsed, tail: process.log.tail(ProcessFailed.tailBytes),
                            process: process.info), id: id)
    }

    private func signal(_ process: ManagedProcess, _ number: Int32) throws(RequestError) {
        if let timer = process.restartTimer {
            // Waiting to restart: the signal stops it for good.
            loop.cancel(timer)
            process.restartTimer = nil
            process.state = .killed
            settled(process)
            return
        }
        guard !process.state.isFinal else {
            throw RequestError(.unknownSession, "process '\(process.name)' is not running (\(process.state.rawValue))")
        }
        process.killGroup(number)
    }

    private func remove(_ process: ManagedProcess) throws(RequestError) {
        guard process.state.isFinal && process.restartTimer == nil else {
            throw RequestError(.processRunning, "process '\(process.name)' is \(process.state.rawValue); stop it first (tether proc kill \(process.name))")
        }
        processes[process.name] = nil
        for number in process.runSessions { exec.forgetUnread(number) }
        for (id, request) in requests {
            if case .logs(let reader) = request, reader.process === process { finish(id) }
        }
    }

    // MARK: ManagedProcessOwner

    func processStarted(_ process: ManagedProcess) {
        if let watch = process.watch {
            watch.start()
        } else {
            process.state = .running
            answerStarts(of: process)
        }
    }

    func processBecameReady(_ process: ManagedProcess) {
        guard !process.state.isFinal else { return }
        process.state = .ready
        process.readyNs = Clock.realtimeNs()
        process.watch = nil
        answerStarts(of: process)
    }

    private func answerStarts(of process: ManagedProcess) {
        for (id, request) in requests {
            if case .start(let waiting, _) = request, waiting === process { reply(ProcessReady(process: process.info), id: id) }
        }
    }

    func processRunEnded(_ process: ManagedProcess, _ exited: Exited) {
        process.exited = exited
        process.pendingCondition = process.watch?.firstPending?.description
        process.watch?.stop()
        process.watch = nil
        if process.signalled && exited.signal != nil {
            process.state = .killed
        } else if exited.code == 0 {
            process.state = .exited
        } else if !process.signalled, let max = process.request.maxRestarts, process.restarts < max {
            scheduleRestart(process)
            return
        } else {
            process.state = .failed
        }
        settled(process)
    }

    func processFailedToStart(_ process: ManagedProcess, _ failure: SpawnFailure) {
        process.pendingCondition = process.watch?.firstPending?.description
        process.watch?.stop()
        process.watch = nil
        process.state = .failed
        // A first run that never started leaves no process behind: its name is free again.
        var answered = false
        for (id, request) in requests {
            if case .start(let waiting, _) = request, waiting === process {
                forget(id)
                link?.send(failure.event, id: id, flags: .end)
                answered = true
            }
        }
        if answered && process.restarts == 0 { processes[process.name] = nil }
        settled(process)
    }

    private func scheduleRestart(_ process: ManagedProcess) {
        process.state = .starting
        let delayMs = min(Self.maxBackoffMs, UInt64(Self.firstBackoff.milliseconds) << min(UInt64(process.restarts), 16))
        process.restarts += 1
        Log.info("process \(process.name) failed (\(process.exited.map { "\($0.shellStatus)" } ?? "?")); restart \(process.restarts) in \(delayMs) ms")
        process.restartTimer = loop.schedule(after: .milliseconds(Int64(delayMs))) { [weak self, weak process] in
            guard let self, let process else { return }
            process.restartTimer = nil
            do throws(RequestError) { try run(process) } catch {
                Log.warning("cannot restart process \(process.name): \(error.message)")
                process.state = .failed
                settled(process)
            }
        }
    }

    /// The process will not run again: starts still waiting hear it exited first, waits hear it ended.
    private func settled(_ process: ManagedProcess) {
        for (id, request) in requests {
            switch request {
            case .start(let waiting, _) where waiting === process:
                let exited = process.exited
                let how = exited.map { $0.code.map { "exited with code \($0)" } ?? "was killed by signal \($0.signal ?? 0)" } ?? "ended"
                let elapsed = (Clock.monotonicNs() - process.runStartedMonotonicNs) / 1_000_000
                reply(ProcessFailed(code: .processExitedBeforeReady, message: "'\(process.name)' \(how) before it was ready",
                                    condition: process.pendingCondition, elapsedMs: elapsed, exited: exited,
                                    tail: process.log.tail(ProcessFailed.tailBytes), process: process.info), id: id)
            case .wait(let waiting) where waiting === process:
                reply(ProcessEnded(process: process.info), id: id)
            default:
                break
            }
        }
        processLogChanged(process)
    }

    func processLogChanged(_ process: ManagedProcess) {
        guard !pumpScheduled, requests.values.contains(where: { if case .logs = $0 { true } else { false } }) else { return }
        pumpScheduled = true
        loop.soon { [weak self] in
            self?.pumpScheduled = false
            self?.pumpAllReaders()
        }
    }
}
