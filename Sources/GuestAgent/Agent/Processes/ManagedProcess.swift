#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// Where a named process reports the turns of its life. Its owner (`AgentProcesses`) answers
/// the requests waiting on it and decides about restarts; the process never reaches further.
protocol ManagedProcessOwner: AnyObject {
    func processStarted(_ process: ManagedProcess)
    func processBecameReady(_ process: ManagedProcess)
    func processRunEnded(_ process: ManagedProcess, _ exited: Exited)
    func processFailedToStart(_ process: ManagedProcess, _ failure: SpawnFailure)
    /// New output is in the log, or the run's output ended: readers may have more to send.
    func processLogChanged(_ process: ManagedProcess)
}

/// One named process: its request, the exec session of its current run (a detached session of
/// the exec subsystem, listed and attachable like any other), its log, its readiness watch,
/// its state and its last exit, kept until the process is removed.
///
/// Owns its log and its watch; holds its session weakly (the exec subsystem owns sessions and
/// ends them). Taps the session: every byte of output goes into the log, and through the line
/// splitters to the watch's log patterns. Lives on the agent's loop thread.
final class ManagedProcess: SessionTap {
    let name: String
    let request: ProcessStart
    let conditions: [ReadinessWatch.Condition]
    weak var owner: ManagedProcessOwner?

    private(set) var log: ProcessLog
    private var lines = [LineSplitter(), LineSplitter()]
    var state = ProcessState.starting
    var restarts: UInt32 = 0
    var startedNs: UInt64 = 0
    var readyNs: UInt64?
    var exited: Exited?
    /// The current run's session (nil between runs); its number and pid stay for `info`.
    private(set) weak var session: Session?
    private(set) var sessionNumber: UInt32 = 0
    /// The exec session of every run so far (the finished ones may wait, unread, for an attach).
    private(set) var runSessions: [UInt32] = []
    private(set) var pid: Int32 = 0
    var watch: ReadinessWatch?
    /// The first condition that had not held when the last run ended (for `processFailed`).
    var pendingCondition: String?
    /// A signal was sent through `processSignal` during this run: its end is `killed`, and it
    /// is not restarted.
    var signalled = false
    /// The current run's output is all read (or there is no run).
    private(set) var outputClosed = true
    var restartTimer: TimerID?
    /// When the current run started (CLOCK_MONOTONIC), for `elapsedMs`.
    var runStartedMonotonicNs: UInt64 = 0

    init(request: ProcessStart, conditions: [ReadinessWatch.Condition]) {
        self.name = request.name
        self.request = request
        self.conditions = conditions
        self.log = ProcessLog(capacity: Int(request.logBytes))
    }

    /// Will neither run again nor write more to its log.
    var isSettled: Bool { state.isFinal && outputClosed && restartTimer == nil }

    /// A new run's session (from the exec subsystem, in the turn that spawned it).
    func runStarted(_ session: Session) {
        self.session = session
        sessionNumber = session.number
        runSessions.append(session.number)
        // The agent keeps at most this many finished sessions anyway (AgentExec.maxUnreadSessions).
        if runSessions.count > AgentExec.maxUnreadSessions { runSessions.removeFirst() }
        pid = session.pid
        outputClosed = false
        signalled = false
        exited = nil
        readyNs = nil
        state = .starting
        startedNs = Clock.realtimeNs()
        runStartedMonotonicNs = Clock.monotonicNs()
        lines = [LineSplitter(), LineSplitter()]
    }

    func killGroup(_ signal: CInt) {
        signalled = true
        session?.killGroup(signal)
    }

    var info: ProcessEntry {
        ProcessEntry(name: name, session: sessionNumber, pid: pid, state: state, argv: request.exec.argv.map(\.description),
                    restarts: restarts, startedNs: startedNs, readyNs: readyNs, exited: exited,
                    logStart: log.start, logEnd: log.end)
    }

    // MARK: SessionTap

    func sessionStarted(_ session: Session) {
        guard session === self.session else { return }
        owner?.processStarted(self)
    }

    /// Output of an earlier run still draining after a restart goes into the log too.
    func sessionOutput(_ session: Session, kind: FrameKind, _ bytes: UnsafeRawBufferPointer) {
        log.append(kind: kind, bytes)
        if session === self.session, let watch, watch.wantsLines {
            lines[kind == .stderr ? 1 : 0].feed(bytes) { watch.line($0) }
        }
        owner?.processLogChanged(self)
    }

    func sessionExited(_ session: Session, _ exited: Exited) {
        guard session === self.session else { return }
        if let watch, watch.wantsLines {
            for i in lines.indices { lines[i].finish { watch.line($0) } }
        }
        owner?.processRunEnded(self, exited)
    }

    func sessionFailedToStart(_ session: Session, _ failure: SpawnFailure) {
        guard session === self.session else { return }
        outputClosed = true
        owner?.processFailedToStart(self, failure)
    }

    func sessionOutputClosed(_ session: Session) {
        guard session === self.session else { return }
        outputClosed = true
        owner?.processLogChanged(self)
    }
}
