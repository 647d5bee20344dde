#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// The exec subsystem: starts sessions (`exec`), lists them (`listSessions`), attaches
/// clients to them (`attach`) and serves the frames on their ids (stdin, ack, resize,
/// signal, kill, detach).
///
/// Owns every session, the table from pids to sessions (for the reaper), the table from the
/// link's ids to sessions (the only record of who watches what), and the finished detached
/// sessions nobody read yet. Lives on the agent's loop thread. `end(_:)` is the one place a
/// session ends; the agent calls `endAll()` when it stops.
final class AgentExec: AgentSubsystem, SessionOwner {
    /// Live sessions at most; more are refused with `limitReached`.
    static let maxSessions = 1024
    /// Finished detached sessions kept for a later `attach` when nobody has read them.
    static let maxUnreadSessions = 64

    private let loop: EventLoop
    private let spawner: ExecSpawner
    private let scratch = ScratchBuffer()
    private var sessions: [UInt32: Session] = [:]
    private var children: [pid_t: Session] = [:]
    private var bound: [UInt32: Session] = [:]
    private var unread: [Session] = []
    private var waitingForRoom: [Session] = []
    private var nextSessionNumber: UInt32 = 1
    /// Set when the agent shuts down: nothing new starts.
    var refusesNew = false
    /// Runs after a session ended or completed (the agent's shutdown waits on it).
    var onProgress: () -> Void = {}

    init(loop: EventLoop, spawner: ExecSpawner) {
        self.loop = loop
        self.spawner = spawner
    }

    /// Every session has nothing left to do but deliver what is queued.
    var allComplete: Bool { sessions.values.allSatisfy { $0.isComplete || $0.phase == .finished } }
    var anyRunning: Bool { sessions.values.contains { $0.phase != .finished && !$0.isComplete } }

    // MARK: AgentSubsystem

    let startKinds: [FrameKind] = [.exec, .listSessions, .attach]

    func start(_ frame: FrameView, on link: FramedConnection) throws(RequestError) {
        let id = frame.header.id
        switch frame.header.kind {
        case .exec:
            try startExec(ExecRequest(frame, as: "exec"), on: link, id: id)
        case .listSessions:
            _ = try ListSessions(frame, as: "listSessions")
            let list = sessions.values.filter { $0.phase != .finished }.sorted { $0.number < $1.number }.map(\.info)
            link.send(SessionList(sessions: list), id: id, flags: .end)
        case .attach:
            let request = try Attach(frame, as: "attach")
            guard let session = sessions[request.session], session.phase != .finished else {
                throw RequestError(.unknownSession, "no session \(request.session) on this agent")
            }
            guard !session.isBound else {
                throw RequestError(.sessionInUse, "session \(request.session) is attached on another id")
            }
            unread.removeAll { $0 === session }
            bind(session, to: link, id: id)
            session.greetAttached(replay: request.replay)
        default:
            throw RequestError(.unknownKind, "kind \(frame.header.kind) cannot start a session")
        }
    }

    func holds(_ id: UInt32) -> Bool { bound[id] != nil }

    func handle(_ frame: FrameView, on link: FramedConnection) throws(RequestError) {
        let id = frame.header.id
        guard let session = bound[id] else { return }
        let kind = "\(frame.header.kind)"
        switch frame.header.kind {
        case .stdin:
            if !session.receiveStdin(frame.payload, end: frame.header.flags.contains(.end)) {
                throw RequestError(.protocolViolation, "more than \(SessionStdin.limitBytes) bytes of stdin unacknowledged "
                                   + "(the window is \(FlowControl.initialWindowBytes))")
            }
        case .ack:
            session.grant(bytes: try Ack(frame, as: kind).bytes)
        case .resize:
            let size = try Resize(frame, as: kind).size
            session.resize(rows: size.rows, columns: size.cols)
        case .signal:
            session.killGroup(try SignalRequest(frame, as: kind).number)
        case .kill:
            _ = try KillRequest(frame, as: kind)
            session.killGroup(SIGKILL)
        case .detach:
            _ = try Detach(frame, as: kind)
            session.detached = true
            link.send(Detached(session: session.number), id: id, flags: .end)
            unbind(session)
        default:
            throw RequestError(.unknownKind, "kind \(frame.header.kind) is not valid on a running session")
        }
    }

    /// An error on a session's id ends it for this client: a detached session goes on
    /// unattached, any other loses its process group.
    func abandon(_ id: UInt32) {
        guard let session = bound[id] else { return }
        unbind(session)
        if !session.detached { session.killGroup(SIGKILL) }
    }

    /// The link is gone: a session that is not detached loses its process group.
    func linkClosed(_ link: FramedConnection) {
        waitingForRoom.removeAll()
        for session in Array(bound.values) where session.client?.link === link {
            unbind(session)
            if !session.detached { session.killGroup(SIGKILL) }
        }
    }

    func linkDrained(_ link: FramedConnection) {
        let waiting = waitingForRoom
        waitingForRoom.removeAll()
        for session in waiting where session.client?.waitsForRoom == true {
            session.client?.waitsForRoom = false
            session.pump()
        }
    }

    // MARK: SessionOwner

    func sessionWaitsForRoom(_ session: Session) { waitingForRoom.append(session) }

    func sessionCompleted(_ session: Session) { end(session) }

    /// A detached session completed while nobody watched: kept for `attach`, a bounded number.
    func sessionCompletedUnwatched(_ session: Session) {
        guard !unread.contains(where: { $0 === session }) else { return }
        unread.append(session)
        if unread.count > Self.maxUnreadSessions { end(unread.removeFirst()) }
        onProgress()
    }

    // MARK: starting, binding, ending

    private func startExec(_ request: ExecRequest, on link: FramedConnection, id: UInt32) throws(RequestError) {
        switch try spawnSession(request) {
        case .success(let session): bind(session, to: link, id: id)
        case .failure(let failure): link.send(failure.event, id: id, flags: .end)
        }
    }

    /// Starts a session nobody watches, for another subsystem: a named process (detached, so it
    /// outlives every link and is listed for attach) or a readiness probe (not detached: it ends
    /// as soon as it completes). The tap sees its output and its end.
    func startUnwatched(_ request: ExecRequest, tap: SessionTap) throws(RequestError) -> Result<Session, SpawnFailure> {
        let result = try spawnSession(request)
        // Set in the same turn as the spawn: output is read only after the report pipe said
        // the exec happened, so the tap sees every byte.
        if case .success(let session) = result { session.tap = tap }
        return result
    }

    private func spawnSession(_ request: ExecRequest) throws(RequestError) -> Result<Session, SpawnFailure> {
        guard !refusesNew else {
            throw RequestError(.shuttingDown, "the agent is shutting down and starts nothing new")
        }
        guard sessions.count < Self.maxSessions else {
            throw RequestError(.limitReached, "\(Self.maxSessions) sessions are running already")
        }
        let started: (child: StartedChild, program: String)
        switch spawner.start(request) {
        case .success(let value): started = value
        case .failure(let failure): return .failure(failure)
        }
        let number = nextSessionNumber
        nextSessionNumber = nextSessionNumber == UInt32.max ? 1 : nextSessionNumber + 1
        let described = Session.Description(
            number: number, argv: request.argv.map(\.description), program: started.program,
            startedNs: Clock.realtimeNs(), drainMs: request.drainMs, killGraceMs: request.killGraceMs,
            timeoutMs: request.timeoutMs)
        let session = Session(owner: self, loop: loop, scratch: scratch, described: described, detached: request.detach,
                              child: started.child)
        sessions[number] = session
        children[started.child.pid] = session
        return .success(session)
    }

    /// The only place a client starts watching a session.
    private func bind(_ session: Session, to link: FramedConnection, id: UInt32) {
        bound[id] = session
        session.clientAttached(SessionClient(link: link, id: id))
    }

    /// The only place a client stops watching one.
    private func unbind(_ session: Session) {
        guard let id = session.client?.id, bound[id] === session else { return }
        bound[id] = nil
        waitingForRoom.removeAll { $0 === session }
        session.clientLeft()
    }

    /// The one place a session ends: out of every table, every descriptor closed.
    func end(_ session: Session) {
        guard session.phase != .finished else { return }
        if let id = session.client?.id, bound[id] === session { bound[id] = nil }
        waitingForRoom.removeAll { $0 === session }
        unread.removeAll { $0 === session }
        session.finish()
        sessions[session.number] = nil
        if children[session.pid] === session { children[session.pid] = nil }
        onProgress()
    }

    /// Ends the session `number` if it completed and waits, unread, for an attach: a named
    /// process that is removed takes its finished runs with it.
    func forgetUnread(_ number: UInt32) {
        guard let session = sessions[number], unread.contains(where: { $0 === session }) else { return }
        end(session)
    }

    /// Ends every session (the agent stopped serving).
    func endAll() {
        for session in Array(sessions.values) { end(session) }
    }

    // MARK: the reaper and shutdown

    /// The reaper's wait status for `pid`; false when no session leads with it (an orphan).
    @discardableResult
    func leaderExited(pid: pid_t, status: CInt) -> Bool {
        guard let session = children.removeValue(forKey: pid) else { return false }
        session.leaderExited(status: status)
        return true
    }

    /// Signals every session's process group.
    func signalAll(_ signal: CInt) {
        for session in sessions.values { session.killGroup(signal) }
    }
}
