#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// One exec: a child process (the leader of its own process group), the descriptors the agent
/// reads and writes for it, its flow-control windows and what it still owes its client.
///
/// Owns: the report pipe until the exec's outcome is known, the read ends of stdout/stderr
/// (or the pty master), the write end of stdin; closes each when it is done with it, and all
/// of them in `teardown()`. Lives on the agent's loop thread. Ends when `done` (or `failed`)
/// has been queued to its client, or, when nobody watches, once its output is complete and it
/// is not detached; the agent then drops it from its tables.
///
/// Event order (DESIGN.md "Exec"): `started`, output, `exited` (queued in the backlog behind
/// everything the pipes held when the leader was reaped), output of descendants for at most
/// `drainMs`, `done`. Or `failed` alone.
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

    /// One descriptor the agent reads output from.
    private struct Output {
        var fd: CInt
        var kind: FrameKind
        var isOpen = true
    }

    unowned let agent: Agent
    /// The agent's own number for the session, stable while it lives (`listSessions`).
    let number: UInt32
    let argv: [String]
    let isTerminal: Bool
    let startedNs: UInt64
    private let program: String
    private let drainMs: UInt64
    private let killGraceMs: UInt64
    private let timeoutMs: UInt64?
    /// Keeps running when its client goes away.
    var detached: Bool
    let pid: pid_t
    private(set) var phase = Phase.spawning
    private(set) var exitStatus: Exited?

    /// Where its events go now; nil while nobody watches.
    private(set) var connection: Connection?
    private(set) var id: UInt32 = 0
    /// Output bytes the client still accepts before it acks more.
    private var window = FlowControl.initialWindowBytes
    /// Waiting in the connection's list for its outbound queue to drain.
    var pausedByConnection = false

    private var reportFD: CInt
    /// A pty master whose slave side was closed while the leader still runs. Closing a master
    /// hangs the terminal up, and the kernel then sends SIGHUP to the session: a program that
    /// closes its stdio before it exits (GNU cat, anything using close_stdout) would die of
    /// that signal between its last close and its exit. So the master stays open, unwatched,
    /// until the leader is reaped.
    private var hungUpMaster: CInt?
    private var outputs: [Output]
    /// The pipe write end, or the pty master (then also `outputs[0].fd`); nil for stdin none.
    private var stdinFD: CInt?
    private var stdinQueue = ByteQueue()
    /// Written to the child but not yet acked to the client.
    private var stdinWrittenUnacked = 0
    private var stdinEOFRequested = false
    private var stdinEOFBytes: [UInt8]?
    private var stdinClosed = false
    private var stdinBlocked = false
    private var stdinLastByte: UInt8?
    private var stdinNoneReported = false
    /// Events currently registered with epoll, per descriptor.
    private var interest: [CInt: UInt32] = [:]
    private(set) var backlog = OutputBacklog()

    private var timeoutTimer: TimerID?
    private var killTimer: TimerID?
    private var drainTimer: TimerID?

    /// Unacked stdin the agent buffers per session: four windows, for clients that count
    /// loosely; beyond it the client broke the protocol.
    static let stdinLimitBytes = 4 * FlowControl.initialWindowBytes
    /// Largest window a client can grant (acks beyond it are clamped).
    static let maxWindowBytes = 64 << 20

    init(agent: Agent, number: UInt32, request: ExecRequest, child: StartedChild, program: String) {
        self.agent = agent
        self.number = number
        self.argv = request.argv.map(\.description)
        self.isTerminal = child.isTerminal
        self.startedNs = Clock.realtimeNs()
        self.program = program
        self.drainMs = request.drainMs
        self.killGraceMs = request.killGraceMs
        self.timeoutMs = request.timeoutMs
        self.detached = request.detach
        self.pid = child.pid
        self.reportFD = child.report
        var outputs = [Output(fd: child.stdout, kind: .stdout)]
        if let stderr = child.stderr { outputs.append(Output(fd: stderr, kind: .stderr)) }
        self.outputs = outputs
        self.stdinFD = child.stdin
        setInterest(reportFD, EventLoop.readable)
    }

    private var loop: EventLoop { agent.loop }

    var isBound: Bool { connection != nil }
    private var outputsClosed: Bool { !outputs.contains { $0.isOpen } }
    /// The leader exited and every output is closed: only queued events remain.
    var isComplete: Bool { phase == .exited && outputsClosed }
    var droppedBytes: UInt64 { backlog.droppedBytes }

    // MARK: binding to a client

    func bind(to connection: Connection, id: UInt32) {
        self.connection = connection
        self.id = id
        window = FlowControl.initialWindowBytes
        stdinWrittenUnacked = 0
        stdinNoneReported = false
    }

    /// The client stops watching (detach, an error on its id, its connection gone). Stdin it
    /// sent but the child has not read yet is dropped with it.
    func unbind() {
        guard let connection else { return }
        connection.unbind(id: id)
        self.connection = nil
        pausedByConnection = false
        stdinQueue.removeAll()
        stdinWrittenUnacked = 0
        if stdinEOFRequested { finishStdinIfDrained() }
        refreshInterest()
        checkComplete()
    }

    /// The connection is gone: a session that is not detached loses its process group.
    func connectionLost() {
        unbind()
        if !detached { killGroup(SIGKILL) }
    }

    /// A new client attaches (`attach`); the window starts afresh. Without replay, what was
    /// buffered while nobody watched is forgotten (the exit status is kept).
    func attach(to connection: Connection, id: UInt32, replay: Bool) {
        bind(to: connection, id: id)
        connection.bind(self, id: id)
        connection.send(Attached(session: number, pid: pid, tty: isTerminal, droppedBytes: backlog.droppedBytes), id: id)
        backlog.droppedBytes = 0
        if !replay { backlog.discardData() }
        pump()
    }

    private func send<M: Message>(_ message: M, flags: FrameFlags = []) {
        connection?.send(message, id: id, flags: flags)
    }

    // MARK: the exec's outcome

    private func reportReadable() {
        var report = csys_spawn_report()
        let result = csys_spawn_read_report(reportFD, &report)
        if result == -EAGAIN { return }
        setInterest(reportFD, 0)
        _ = Glibc.close(reportFD)
        reportFD = -1
        if result == 1 {
            failToStart(SpawnFailure(stage: SpawnStage(child: report.stage), errno: report.error, program: program))
        } else {
            // EOF: the exec closed the pipe (CLOEXEC). A read error on our own pipe cannot be
            // told apart from it; the wait status will say what happened.
            becomeRunning()
        }
    }

    private func becomeRunning() {
        phase = .running
        send(Started(pid: pid))
        if let timeoutMs {
            timeoutTimer = loop.schedule(after: .milliseconds(Int64(clamping: timeoutMs))) { [unowned self] in timedOut() }
        }
        refreshInterest()
        connection?.scheduleFlush()
    }

    private func failToStart(_ failure: SpawnFailure) {
        send(failure.event, flags: .end)
        connection?.scheduleFlush()
        if let connection { connection.unbind(id: id) }
        connection = nil
        for i in outputs.indices { closeOutput(i) }
        teardown()
    }

    // MARK: the leader's exit

    /// Called by the agent's reaper with the leader's wait status.
    func leaderExited(status: CInt) {
        if phase == .spawning { reportReadable() }
        if phase == .spawning { becomeRunning() }   // no report at all: the exec happened
        guard phase == .running else { return }
        phase = .exited
        closeHungUpMaster()
        let exited: Exited
        if csys_wifsignaled(status) != 0 {
            exited = .signal(csys_wtermsig(status), coreDumped: csys_wcoredump(status) != 0)
        } else {
            exited = .code(csys_wexitstatus(status))
        }
        exitStatus = exited
        // Everything in the pipes now goes out before `exited`.
        for i in outputs.indices where outputs[i].isOpen { snapshot(i) }
        backlog.appendExited(exited)
        if let timer = timeoutTimer { loop.cancel(timer) }
        timeoutTimer = nil
        if outputsClosed {
            pump()
        } else {
            drainTimer = loop.schedule(after: .milliseconds(Int64(clamping: drainMs))) { [unowned self] in drainExpired() }
            pump()
        }
    }

    /// Reads what a pipe holds right now (FIONREAD), no more: a descendant that keeps writing
    /// cannot hold the exit back.
    private func snapshot(_ index: Int) {
        var remaining = Int(csys_readable_bytes(outputs[index].fd))
        if remaining < 0 { remaining = 1 << 20 }
        while remaining > 0 && outputs[index].isOpen {
            let outcome = readIntoBacklog(index, limit: min(remaining, Frame.maxDataPayloadBytes))
            guard case .bytes(let n) = outcome else { break }
            remaining -= n
        }
    }

    private func drainExpired() {
        drainTimer = nil
        for i in outputs.indices { closeOutput(i) }
        pump()
    }

    // MARK: output

    private enum ReadOutcome { case bytes(Int), endOfFile, wouldBlock }

    /// Reads once from an output into the backlog (snapshots, and sessions nobody watches).
    @discardableResult
    private func readIntoBacklog(_ index: Int, limit: Int) -> ReadOutcome {
        let fd = outputs[index].fd
        let kind = outputs[index].kind
        let bounded = connection == nil
        let outcome: ReadOutcome = agent.withScratch(limit) { buffer in
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n > 0 {
                backlog.append(kind: kind, UnsafeRawBufferPointer(rebasing: buffer[0..<n]), bounded: bounded)
                return .bytes(n)
            }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { return .wouldBlock }
            return .endOfFile   // 0, or EIO on a pty master whose slave side is gone
        }
        if case .endOfFile = outcome { closeOutput(index) }
        return outcome
    }

    private func outputReadable(_ index: Int) {
        guard outputs[index].isOpen else { return }
        if let connection {
            if connection.congested { connection.pause(self) }
            guard backlog.isEmpty, window > 0, !connection.congested else {
                refreshInterest()
                return
            }
            let fd = outputs[index].fd
            let kind = outputs[index].kind
            for _ in 0..<4 {
                let limit = min(window, Frame.maxDataPayloadBytes)
                var failure: CInt = 0
                let n = connection.appendOutput(id: id, kind: kind, maxPayload: limit) { buffer in
                    let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
                    if n < 0 { failure = errno }
                    return n
                }
                if n > 0 {
                    window -= n
                    if n < limit || window == 0 || connection.congested { break }
                    continue
                }
                if n < 0 && (failure == EAGAIN || failure == EINTR) { break }
                closeOutput(index)   // EOF, or EIO on a pty master: the slave side is gone
                break
            }
            connection.outputAppended()
        } else {
            readIntoBacklog(index, limit: Frame.maxDataPayloadBytes)
        }
        if !outputs[index].isOpen { pump() } else { refreshInterest() }
    }

    private func closeOutput(_ index: Int) {
        guard outputs[index].isOpen else { return }
        let fd = outputs[index].fd
        outputs[index].isOpen = false
        if fd == stdinFD {
            // The pty master carries stdin too: nothing can be written once output ended.
            stdinFD = nil
            stdinClosed = true
            stdinQueue.removeAll()
        }
        setInterest(fd, 0)
        if isTerminal && phase == .running {
            hungUpMaster = fd
        } else {
            _ = Glibc.close(fd)
        }
    }

    private func closeHungUpMaster() {
        guard let fd = hungUpMaster else { return }
        hungUpMaster = nil
        _ = Glibc.close(fd)
    }

    /// Sends what the backlog and the window allow, then `done` once everything is out.
    func pump() {
        if let connection {
            loop: while let head = backlog.oldest {
                switch head {
                case .data(let kind):
                    guard window > 0, !connection.congested else { break loop }
                    let n = backlog.withHeadBytes { raw in
                        let n = min(raw.count, window, Frame.maxDataPayloadBytes)
                        connection.appendData(id: id, kind: kind, UnsafeRawBufferPointer(rebasing: raw[0..<n]))
                        return n
                    }
                    window -= n
                    backlog.consumeFirst(bytes: n)
                case .exited(let exited):
                    connection.send(exited, id: id)
                    backlog.consumeFirst(bytes: 0)
                }
            }
            connection.outputAppended()
        }
        checkComplete()
        refreshInterest()
    }

    private func checkComplete() {
        guard isComplete else { return }
        if let connection {
            guard backlog.isEmpty else { return }
            connection.send(Done(), id: id, flags: .end)
            connection.unbind(id: id)
            self.connection = nil
            connection.scheduleFlush()
            teardown()
        } else if !detached {
            teardown()
        } else {
            agent.keepUnread(self)
        }
    }

    // MARK: client control

    /// `ack{bytes}`: more output window.
    func grant(bytes: UInt64) {
        window = Int(min(UInt64(Self.maxWindowBytes), UInt64(window) + min(bytes, UInt64(Self.maxWindowBytes))))
        pump()
    }

    func resize(rows: UInt16, columns: UInt16) {
        guard isTerminal, let fd = outputs.first(where: { $0.isOpen })?.fd else { return }
        try? Terminal.resize(fd, rows: rows, columns: columns)
    }

    /// Sends a signal to the session's process group (and to the leader itself while it may
    /// not have called setsid yet: the signal then waits, blocked, until the exec).
    func killGroup(_ signal: CInt) {
        guard phase != .finished else { return }
        _ = kill(-pid, signal)
        if phase == .spawning || phase == .running { _ = kill(pid, signal) }
    }

    private func timedOut() {
        timeoutTimer = nil
        killGroup(SIGTERM)
        killTimer = loop.schedule(after: .milliseconds(Int64(clamping: killGraceMs))) { [unowned self] in
            killTimer = nil
            killGroup(SIGKILL)
        }
    }

    // MARK: stdin

    /// A `stdin` frame: bytes for the child, END meaning end of input after them.
    /// Returns false when the client sent beyond the window (a protocol violation).
    func receiveStdin(_ bytes: UnsafeRawBufferPointer, end: Bool) -> Bool {
        guard let fd = stdinFD, !stdinClosed else {
            if stdinFD == nil && !stdinClosed && !isTerminal && !stdinNoneReported && bytes.count > 0 {
                stdinNoneReported = true
                send(StdinError(errno: EBADF, message: "this session's stdin is /dev/null (request stdin: \"pipe\")"))
            }
            if bytes.count > 0 { send(Ack(bytes: UInt64(bytes.count))) }
            return true
        }
        _ = fd
        guard stdinQueue.count + stdinWrittenUnacked + bytes.count <= Self.stdinLimitBytes else { return false }
        stdinQueue.append(bytes)
        if end { stdinEOFRequested = true }
        writeStdin()
        return true
    }

    private func writeStdin() {
        guard let fd = stdinFD, !stdinClosed else { return }
        stdinBlocked = false
        while !stdinQueue.isEmpty {
            let result: Result<WriteResult, Errno> = stdinQueue.withBytes { raw in
                Result { () throws(Errno) -> WriteResult in try FileIO.write(fd, raw) }
            }
            switch result {
            case .success(.wrote(let n)):
                stdinQueue.withBytes { raw in if n > 0 { stdinLastByte = raw[n - 1] } }
                stdinQueue.consume(n)
                stdinWrittenUnacked += n
            case .success(.wouldBlock):
                stdinBlocked = true
            case .failure(let error):
                stdinFailed(error)
                return
            }
            if stdinBlocked { break }
        }
        if stdinQueue.isEmpty { finishStdinIfDrained() }
        ackStdin()
        refreshInterest()
    }

    /// After the queue is written: EOF closes the pipe, or writes VEOF to a terminal.
    private func finishStdinIfDrained() {
        guard stdinEOFRequested, stdinQueue.isEmpty, let fd = stdinFD, !stdinClosed else { return }
        if !isTerminal {
            setInterest(fd, 0)
            _ = Glibc.close(fd)
            stdinFD = nil
            stdinClosed = true
            return
        }
        if stdinEOFBytes == nil { stdinEOFBytes = Terminal.endOfInput(fd, lastByte: stdinLastByte) }
        guard var pending = stdinEOFBytes, !pending.isEmpty else { return }
        let result = pending.withUnsafeBytes { raw in Result { () throws(Errno) -> WriteResult in try FileIO.write(fd, raw) } }
        switch result {
        case .success(.wrote(let n)):
            pending.removeFirst(n)
            stdinEOFBytes = pending
            if pending.isEmpty {
                stdinClosed = true        // the master stays open: it carries the output
                stdinEOFRequested = false
            } else {
                stdinBlocked = true
            }
        case .success(.wouldBlock):
            stdinBlocked = true
        case .failure(let error):
            stdinFailed(error)
        }
    }

    /// Acks what was written, at least every half window and whenever the queue runs dry.
    private func ackStdin() {
        guard stdinWrittenUnacked > 0, connection != nil else { return }
        guard stdinQueue.isEmpty || stdinWrittenUnacked >= FlowControl.ackThresholdBytes else { return }
        send(Ack(bytes: UInt64(stdinWrittenUnacked)))
        stdinWrittenUnacked = 0
        connection?.scheduleFlush()
    }

    /// EPIPE (the child closed its stdin) or EIO (the terminal hung up): reported once, not
    /// terminal; later stdin is acked and dropped.
    private func stdinFailed(_ error: Errno) {
        let discarded = stdinQueue.count
        stdinQueue.removeAll()
        stdinWrittenUnacked += discarded
        let what = error.rawValue == EPIPE ? "the program closed its stdin" : "writing to the program's stdin failed"
        send(StdinError(errno: error.rawValue, message: "\(what): \(error)"))
        stdinClosed = true
        stdinBlocked = false
        if let fd = stdinFD, !isTerminal {
            setInterest(fd, 0)
            _ = Glibc.close(fd)
            stdinFD = nil
        }
        ackStdin()
        refreshInterest()
    }

    // MARK: descriptors and epoll

    /// Registers what each descriptor should wait for now. A descriptor with nothing to wait
    /// for is removed from epoll, not left with an empty mask: epoll reports EPOLLHUP
    /// regardless of the mask, and a level-triggered hang-up nobody reads would spin the loop.
    func refreshInterest() {
        guard phase != .finished else { return }
        let reading: Bool
        if let connection {
            reading = backlog.isEmpty && window > 0 && !connection.congested && phase != .spawning
        } else {
            reading = phase != .spawning
        }
        var wanted: [CInt: UInt32] = [:]
        for output in outputs where output.isOpen && reading { wanted[output.fd, default: 0] |= EventLoop.readable }
        if let fd = stdinFD, stdinBlocked, !stdinClosed { wanted[fd, default: 0] |= EventLoop.writable }
        if reportFD >= 0 { wanted[reportFD] = EventLoop.readable }
        for (fd, _) in interest where wanted[fd] == nil { setInterest(fd, 0) }
        for (fd, events) in wanted { setInterest(fd, events) }
    }

    private func setInterest(_ fd: CInt, _ events: UInt32) {
        let current = interest[fd] ?? 0
        guard current != events else { return }
        if events == 0 {
            loop.unwatch(fd)
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
            // epoll_ctl fails only for lack of memory (ENOMEM, ENOSPC): treat the stream as ended.
            Log.warning("cannot watch descriptor \(fd) of session \(number): \(error)")
            loop.unwatch(fd)
            interest[fd] = nil
        }
    }

    private func handle(_ fd: CInt, _ events: UInt32) {
        if fd == reportFD {
            reportReadable()
            return
        }
        if events & EventLoop.writable != 0 || (events & (EventLoop.error | EventLoop.hangUp) != 0 && stdinBlocked),
           fd == stdinFD {
            if stdinEOFBytes != nil && stdinQueue.isEmpty { finishStdinIfDrained(); refreshInterest() } else { writeStdin() }
        }
        if events & (EventLoop.readable | EventLoop.hangUp | EventLoop.error) != 0,
           let index = outputs.firstIndex(where: { $0.fd == fd && $0.isOpen }) {
            outputReadable(index)
        }
    }

    /// Closes every descriptor and cancels every timer; the session is finished.
    func teardown() {
        guard phase != .finished else { return }
        for i in outputs.indices { closeOutput(i) }
        closeHungUpMaster()
        if let fd = stdinFD {
            setInterest(fd, 0)
            _ = Glibc.close(fd)
            stdinFD = nil
        }
        if reportFD >= 0 {
            setInterest(reportFD, 0)
            _ = Glibc.close(reportFD)
            reportFD = -1
        }
        for timer in [timeoutTimer, killTimer, drainTimer].compactMap({ $0 }) { loop.cancel(timer) }
        timeoutTimer = nil
        killTimer = nil
        drainTimer = nil
        phase = .finished
        agent.sessionFinished(self)
    }

    /// For `sessionList`.
    var info: SessionInfo {
        SessionInfo(session: number, pid: pid, argv: argv, tty: isTerminal, detached: detached,
                    attached: connection != nil, startedNs: startedNs, exited: exitStatus)
    }
}
