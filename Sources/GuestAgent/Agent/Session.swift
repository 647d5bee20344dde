#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// One exec: a child process (the leader of its own process group), the descriptors the agent
/// reads and writes for it (`SessionOutput`, `SessionStdin`, `SessionTerminal`), its
/// flow-control window and what it still owes its client.
///
/// Owns: the report pipe until the exec's outcome is known, and its IO objects; closes
/// everything in `finish()`, which only its owner calls. Lives on the agent's loop thread.
/// Completes when `done` (or `failed`) has been queued to its client, or, when nobody
/// watches, once its output is complete; it then tells its owner, which ends it.
///
/// Event order: `started`, output, `exited` (queued in the backlog behind everything the
/// pipes held when the leader was reaped), output of descendants for at most `drainMs`,
/// `done`. Or `failed` alone.
final class Session {
    enum Phase: Equatable {
        /// Forked; the report pipe has not said yet whether the exec happened.
        case spawning
        case running
        /// The leader was reaped; output may still be draining or waiting for window.
        case exited
        /// `failed` or `done` went out, or the session was dropped: nothing more happens.
        case finished
    }

    /// What the request asked for, kept for `sessionList` and the timers.
    struct Description {
        let number: UInt32
        let argv: [String]
        let program: String
        let startedNs: UInt64
        let drainMs: UInt64
        let killGraceMs: UInt64
        let timeoutMs: UInt64?
    }

    /// Largest window a client can grant (acks beyond it are clamped).
    static let maxWindowBytes = 64 << 20

    weak var owner: SessionOwner?
    /// Sees the output and the end (named processes, readiness probes); nil for plain exec.
    weak var tap: SessionTap?
    let loop: EventLoop
    let scratch: ScratchBuffer
    let described: Description
    let pid: pid_t
    /// Keeps running when its client goes away.
    var detached: Bool
    private(set) var phase = Phase.spawning
    private(set) var exitStatus: Exited?

    /// Who watches now; nil while nobody does. Set only through the owner (`clientAttached`,
    /// `clientLeft`), which keeps the table from ids to sessions.
    var client: SessionClient?

    private var report: SharedFD?
    let output: SessionOutput
    let stdin: SessionStdin
    var backlog = OutputBacklog()
    /// Events currently registered with epoll, per descriptor.
    private var interest: [CInt: UInt32] = [:]
    private var timers = SessionTimers()

    init(owner: SessionOwner, loop: EventLoop, scratch: ScratchBuffer, described: Description, detached: Bool,
         child: StartedChild) {
        self.owner = owner
        self.loop = loop
        self.scratch = scratch
        self.described = described
        self.detached = detached
        self.pid = child.pid
        self.report = child.report
        let terminal = child.isTerminal ? SessionTerminal(master: child.stdout) : nil
        self.output = SessionOutput(stdout: child.stdout, stderr: child.stderr, terminal: terminal)
        self.stdin = SessionStdin(fd: child.stdin, terminal: terminal)
        for fd in [child.report, child.stdout, child.stderr, child.stdin].compactMap({ $0 }) {
            fd.willClose = { [weak self] raw in self?.setInterest(raw, 0) }
        }
        setInterest(child.report.raw, EventLoop.readable)
    }

    var number: UInt32 { described.number }
    var isTerminal: Bool { output.terminal != nil }
    var isBound: Bool { client != nil }
    /// The leader exited and every output is closed: only queued events remain.
    var isComplete: Bool { phase == .exited && output.allClosed }
    private var leaderRunning: Bool { phase == .running }

    // MARK: the client (called by the owner)

    /// A client watches from now on; the window starts afresh.
    func clientAttached(_ client: SessionClient) {
        self.client = client
        stdin.clientChanged()
    }

    /// The client stops watching (detach, an error on its id, its link gone). Stdin it sent
    /// but the program has not read yet is dropped with it.
    func clientLeft() {
        guard client != nil else { return }
        client = nil
        var replies: [StdinReply] = []
        stdin.clientLeft(&replies)
        refreshInterest()
        checkComplete()
    }

    /// Tells a client that attached what it missed; without replay, what was buffered while
    /// nobody watched is forgotten (the exit status is kept).
    func greetAttached(replay: Bool) {
        send(Attached(session: number, pid: pid, tty: isTerminal, droppedBytes: backlog.droppedBytes))
        backlog.droppedBytes = 0
        if !replay { backlog.discardData() }
        pump()
    }

    func send<M: Message>(_ message: M, flags: FrameFlags = []) {
        guard let client else { return }
        client.link.send(message, id: client.id, flags: flags)
    }

    // MARK: the exec's outcome

    private func reportReadable() {
        guard let report else { return }
        var spawnReport = csys_spawn_report()
        let result = csys_spawn_read_report(report.raw, &spawnReport)
        if result == -EAGAIN { return }
        report.close()
        self.report = nil
        if result == 1 {
            failToStart(SpawnFailure(stage: SpawnStage(child: spawnReport.stage), errno: spawnReport.error, program: described.program))
        } else {
            // EOF: the exec closed the pipe (CLOEXEC). A read error on our own pipe cannot be
            // told apart from it; the wait status will say what happened.
            becomeRunning()
        }
    }

    private func becomeRunning() {
        phase = .running
        send(Started(pid: pid))
        tap?.sessionStarted(self)
        if let timeoutMs = described.timeoutMs {
            timers.timeout = loop.schedule(after: .milliseconds(Int64(clamping: timeoutMs))) { [weak self] in self?.timedOut() }
        }
        refreshInterest()
    }

    private func failToStart(_ failure: SpawnFailure) {
        tap?.sessionFailedToStart(self, failure)
        send(failure.event, flags: .end)
        closeAllOutput()
        owner?.sessionCompleted(self)
    }

    // MARK: the leader's exit

    /// Called by the reaper with the leader's wait status.
    func leaderExited(status: CInt) {
        if phase == .spawning { reportReadable() }
        if phase == .spawning { becomeRunning() }   // no report at all: the exec happened
        guard phase == .running else { return }
        phase = .exited
        output.terminal?.leaderReaped()
        var exited: Exited
        if csys_wifsignaled(status) != 0 {
            exited = .signal(csys_wtermsig(status), coreDumped: csys_wcoredump(status) != 0)
        } else {
            exited = .code(csys_wexitstatus(status))
        }
        // However it ended (TERM, KILL after the grace, or its own exit code after catching
        // TERM), it ended because its time ran out.
        exited.timedOut = timers.timeoutFired
        exitStatus = exited
        // Everything in the pipes now goes out before `exited`.
        for i in output.streams.indices where output.streams[i].isOpen { snapshot(i) }
        backlog.appendExited(exited)
        tap?.sessionExited(self, exited)
        timers.cancelTimeout(on: loop)
        if output.anyOpen {
            timers.drain = loop.schedule(after: .milliseconds(Int64(clamping: described.drainMs))) { [weak self] in
                self?.drainExpired()
            }
        }
        pump()
    }

    private func drainExpired() {
        timers.drain = nil
        closeAllOutput()
        pump()
    }

    /// Sends `done` once everything is out, or tells the owner the session is complete.
    func checkComplete() {
        guard isComplete else { return }
        if client != nil {
            guard backlog.isEmpty else { return }
            send(Done(), flags: .end)
            owner?.sessionCompleted(self)
        } else if !detached {
            owner?.sessionCompleted(self)
        } else {
            owner?.sessionCompletedUnwatched(self)
        }
    }

    // MARK: client control

    /// `ack{bytes}`: more output window.
    func grant(bytes: UInt64) {
        guard let window = client?.window else { return }
        client?.window = Int(min(UInt64(Self.maxWindowBytes), UInt64(window) + min(bytes, UInt64(Self.maxWindowBytes))))
        pump()
    }

    func resize(rows: UInt16, columns: UInt16) {
        guard output.anyOpen else { return }
        output.terminal?.resize(rows: rows, columns: columns)
    }

    /// Sends a signal to the session's process group (and to the leader itself while it may
    /// not have called setsid yet: the signal then waits, blocked, until the exec).
    func killGroup(_ signal: CInt) {
        guard phase != .finished else { return }
        _ = kill(-pid, signal)
        if phase == .spawning || phase == .running { _ = kill(pid, signal) }
    }

    private func timedOut() {
        timers.timeout = nil
        timers.timeoutFired = true
        killGroup(SIGTERM)
        timers.kill = loop.schedule(after: .milliseconds(Int64(clamping: described.killGraceMs))) { [weak self] in
            self?.timers.kill = nil
            self?.killGroup(SIGKILL)
        }
    }

    /// A `stdin` frame. Returns false when the client sent beyond the window.
    func receiveStdin(_ bytes: UnsafeRawBufferPointer, end: Bool) -> Bool {
        var replies: [StdinReply] = []
        let accepted = stdin.receive(bytes, end: end, &replies)
        deliver(replies)
        refreshInterest()
        return accepted
    }

    private func deliver(_ replies: [StdinReply]) {
        for reply in replies {
            switch reply {
            case .ack(let bytes): send(Ack(bytes: UInt64(bytes)))
            case .error(let error): send(error)
            }
        }
    }

    // MARK: descriptors and epoll

    /// Registers what each descriptor should wait for now. A descriptor with nothing to wait
    /// for is removed from epoll, not left with an empty mask: epoll reports EPOLLHUP
    /// regardless of the mask, and a level-triggered hang-up nobody reads would spin the loop.
    func refreshInterest() {
        guard phase != .finished else { return }
        let reading: Bool
        if let client {
            // Whatever stopped this session (a full pipe read, the backlog's pump, an exit
            // snapshot), a congested link must wake it again once it drains: nothing else
            // will while its descriptors are out of epoll.
            if client.link.congested { waitForRoom() }
            reading = backlog.isEmpty && client.window > 0 && !client.link.congested && phase != .spawning
        } else {
            reading = phase != .spawning
        }
        // Registered in this order (stdout, stderr, stdin, report): pipes that are already
        // readable when they are added (the program wrote to both before its exec was seen) are
        // reported by epoll in the order they were added, so stdout's bytes come before
        // stderr's, the order a program most often writes them. A dictionary's order varied
        // from one agent process to the next.
        var wanted: [CInt: UInt32] = [:]
        var order: [CInt] = []
        func want(_ fd: CInt, _ events: UInt32) {
            if wanted[fd] == nil { order.append(fd) }
            wanted[fd, default: 0] |= events
        }
        for stream in output.streams where stream.isOpen && reading { want(stream.fd.raw, EventLoop.readable) }
        if let fd = stdin.waitingDescriptor { want(fd, EventLoop.writable) }
        if let report { want(report.raw, EventLoop.readable) }
        for (fd, _) in interest where wanted[fd] == nil { setInterest(fd, 0) }
        for fd in order { setInterest(fd, wanted[fd] ?? 0) }
    }

    private func setInterest(_ fd: CInt, _ events: UInt32) {
        let current = interest[fd] ?? 0
        guard current != events else { return }
        if events == 0 {
            loop.unwatch(fd, "descriptor of session \(number)")
            interest[fd] = nil
            return
        }
        do {
            if current == 0 {
                try loop.watch(fd, events: events) { [unowned self] ready in handle(fd, ready) }
            } else {
                try loop.modify(fd, events: events)
            }
            interest[fd] = events
        } catch {
            loop.unwatch(fd, "descriptor of session \(number)")
            interest[fd] = nil
            cannotWatch(fd, error)
        }
    }

    /// epoll_ctl fails only for lack of memory (ENOMEM, ENOSPC). The descriptor can no longer
    /// be waited for, so its stream ends as if it had been closed: output is cut there, stdin
    /// fails like a broken pipe; the report pipe is left to the reaper (the wait status says
    /// what happened).
    private func cannotWatch(_ fd: CInt, _ error: Errno) {
        Log.warning("cannot watch descriptor \(fd) of session \(number): \(error)")
        if let index = output.index(of: fd) {
            closeOutput(index)
            loop.soon { [weak self] in self?.pump() }
        } else if fd == stdin.waitingDescriptor {
            var replies: [StdinReply] = []
            stdin.cannotWait(error, &replies)
            deliver(replies)
        }
    }

    private func handle(_ fd: CInt, _ events: UInt32) {
        if fd == report?.raw {
            reportReadable()
            return
        }
        // Room to write, or a hang-up while a write waits (the next write reports it).
        if fd == stdin.waitingDescriptor, events & (EventLoop.writable | EventLoop.hangUp | EventLoop.error) != 0 {
            var replies: [StdinReply] = []
            stdin.writable(&replies)
            deliver(replies)
            refreshInterest()
        }
        if events & (EventLoop.readable | EventLoop.hangUp | EventLoop.error) != 0, let index = output.index(of: fd) {
            outputReadable(index)
        }
    }

    func closeOutput(_ index: Int) {
        let wasOpen = output.streams[index].isOpen
        output.close(index, leaderRunning: leaderRunning)
        if wasOpen && output.allClosed { tap?.sessionOutputClosed(self) }
        // The pty master carries stdin too: nothing can be written once output ended.
        if isTerminal { stdin.outputEnded() }
    }

    func closeAllOutput() {
        for i in output.streams.indices { closeOutput(i) }
    }

    /// Closes every descriptor and cancels every timer: the session is finished. Only the
    /// owner calls this, from the one place that ends sessions.
    func finish() {
        guard phase != .finished else { return }
        client = nil
        output.closeAll(leaderRunning: false)
        output.terminal?.close()
        stdin.close()
        report?.close()
        report = nil
        timers.cancelAll(on: loop)
        for fd in Array(interest.keys) { setInterest(fd, 0) }
        phase = .finished
    }

    /// For `sessionList`.
    var info: SessionInfo {
        SessionInfo(session: number, pid: pid, argv: described.argv, tty: isTerminal, detached: detached,
                    attached: client != nil, startedNs: described.startedNs, exited: exitStatus)
    }
}
