#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// The readiness conditions of one run of a named process, checked by the agent until every
/// one has held once: ports and files on a timer every `pollInterval`, HTTP and exec probes
/// one attempt at a time (the next `retryDelay` after a failure), log patterns on every line
/// of output as it is read. Each condition counts from the moment it held; `onReady` runs once,
/// in a later turn of the loop, when the last one did.
///
/// Owns its timers, its HTTP attempt and its exec probes; `stop()` ends them all (a probe
/// still running is killed). Lives on the agent's loop thread.
final class ReadinessWatch {
    /// Ports and files are polled this often: ready is reported within this (and a loop turn)
    /// of the listen(2) or the file's creation; a /proc/net/tcp read costs microseconds.
    static let pollInterval = Duration.milliseconds(10)
    /// Between a failed HTTP or exec attempt and the next.
    static let retryDelay = Duration.milliseconds(20)

    enum Condition {
        case port(UInt16)
        case http(HTTPProbe)
        case log(LogPattern)
        case file(String)
        case exec([String])

        /// How errors and `proc ls` name it.
        var description: String {
            switch self {
            case .port(let port): "port \(port)"
            case .http(let probe): "http \(probe.host.contains(":") ? "[\(probe.host)]" : probe.host):\(probe.port)\(probe.path)"
            case .log(let pattern): "log /\(pattern.source)/"
            case .file(let path): "file \(path)"
            case .exec(let argv): "exec \(argv.joined(separator: " "))"
            }
        }
    }

    /// Starts one exec probe and reports whether it exited 0; returns a way to kill it, or nil
    /// when it could not start (reported as a failed attempt).
    typealias ExecRunner = (_ argv: [String], _ done: @escaping (Bool) -> Void) -> ExecProbe?

    private let loop: EventLoop
    private let conditions: [Condition]
    private var held: [Bool]
    private let runExec: ExecRunner
    private var pollTimer: TimerID?
    private var retryTimers: [Int: TimerID] = [:]
    private var httpChecks: [Int: HTTPCheck] = [:]
    private var execProbes: [Int: ExecProbe] = [:]
    private var stopped = false
    var onReady: () -> Void = {}

    init(loop: EventLoop, conditions: [Condition], runExec: @escaping ExecRunner) {
        self.loop = loop
        self.conditions = conditions
        self.held = Array(repeating: false, count: conditions.count)
        self.runExec = runExec
    }

    deinit { stop() }

    var isReady: Bool { !held.contains(false) }
    /// The first condition that has not held yet (for `processReadyTimeout`).
    var firstPending: Condition? { held.firstIndex(of: false).map { conditions[$0] } }
    var wantsLines: Bool {
        guard !stopped else { return false }
        return conditions.indices.contains { index in
            guard !held[index], case .log = conditions[index] else { return false }
            return true
        }
    }

    func start() {
        for index in conditions.indices { attempt(index) }
        poll()
        checkReady()
    }

    /// Stops every check; `onReady` will not run.
    func stop() {
        stopped = true
        if let pollTimer { loop.cancel(pollTimer) }
        pollTimer = nil
        for timer in retryTimers.values { loop.cancel(timer) }
        retryTimers.removeAll()
        for check in httpChecks.values { check.cancel() }
        httpChecks.removeAll()
        for probe in execProbes.values { probe.kill() }
        execProbes.removeAll()
    }

    /// A whole line of output (either stream).
    func line(_ line: [UInt8]) {
        guard !stopped else { return }
        var changed = false
        for index in conditions.indices where !held[index] {
            if case .log(let pattern) = conditions[index], pattern.matches(line) {
                held[index] = true
                changed = true
            }
        }
        if changed { checkReady() }
    }

    // MARK: checks

    /// Ports and files, all at once, every poll interval while any is pending.
    private func poll() {
        pollTimer = nil
        guard !stopped else { return }
        var pending = false
        for index in conditions.indices where !held[index] {
            switch conditions[index] {
            case .port(let port):
                if ReadinessProbes.isListening(port: port) { held[index] = true } else { pending = true }
            case .file(let path):
                if ReadinessProbes.exists(path) { held[index] = true } else { pending = true }
            case .http, .log, .exec:
                break
            }
        }
        checkReady()
        if pending && !stopped { pollTimer = loop.schedule(after: Self.pollInterval) { [weak self] in self?.poll() } }
    }

    /// One HTTP or exec attempt for condition `index`.
    private func attempt(_ index: Int) {
        retryTimers[index] = nil
        guard !stopped, !held[index] else { return }
        switch conditions[index] {
        case .http(let probe):
            let check = HTTPCheck(loop: loop, probe: probe)
            httpChecks[index] = check
            check.start { [weak self] ok in self?.attempted(index, ok) }
        case .exec(let argv):
            let probe = runExec(argv) { [weak self] ok in self?.attempted(index, ok) }
            if let probe { execProbes[index] = probe } else { loop.soon { [weak self] in self?.attempted(index, false) } }
        case .port, .file, .log:
            break
        }
    }

    private func attempted(_ index: Int, _ ok: Bool) {
        httpChecks[index] = nil
        execProbes[index] = nil
        guard !stopped else { return }
        if ok {
            held[index] = true
            checkReady()
        } else {
            retryTimers[index] = loop.schedule(after: Self.retryDelay) { [weak self] in self?.attempt(index) }
        }
    }

    private func checkReady() {
        guard !stopped, isReady else { return }
        stop()
        // Never from inside a check's own call stack (a tap in the middle of a read).
        loop.soon { [onReady] in onReady() }
    }
}

/// A `--wait-exec` command run as an exec session nobody watches: reports once whether it
/// exited 0. Holds the session weakly (the exec subsystem owns it); `kill()` ends its group.
final class ExecProbe: SessionTap {
    private weak var session: Session?
    private var done: ((Bool) -> Void)?

    init(done: @escaping (Bool) -> Void) { self.done = done }

    func attach(_ session: Session) { self.session = session }

    func kill() {
        done = nil
        session?.killGroup(SIGKILL)
    }

    private func report(_ ok: Bool) {
        let done = self.done
        self.done = nil
        done?(ok)
    }

    func sessionStarted(_ session: Session) {}
    func sessionOutput(_ session: Session, kind: FrameKind, _ bytes: UnsafeRawBufferPointer) {}
    func sessionExited(_ session: Session, _ exited: Exited) { report(exited.code == 0) }
    func sessionFailedToStart(_ session: Session, _ failure: SpawnFailure) { report(false) }
    func sessionOutputClosed(_ session: Session) {}
}
