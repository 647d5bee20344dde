import TetherPosix
import TetherProtocol

/// Where a session reports what it cannot decide alone. Its owner (the exec subsystem) keeps
/// the tables and is the only one that ends a session; the session never reaches further.
protocol SessionOwner: AnyObject {
    /// The link the session writes to is congested: resume it (`pump()`) once it drained.
    func sessionWaitsForRoom(_ session: Session)
    /// Nothing more will happen: `done` or `failed` went out, or nobody watches a session that
    /// is not detached. The owner ends it.
    func sessionCompleted(_ session: Session)
    /// Complete while detached and unwatched: the owner keeps it for a later `attach`.
    func sessionCompletedUnwatched(_ session: Session)
}

/// Sees a session's output as it is read, whoever watches, and how the session ended: what a
/// named process keeps its log and readiness from (`Processes/`). A session with a tap keeps
/// no backlog of its own while nobody watches (the tap holds the output).
protocol SessionTap: AnyObject {
    /// The exec happened (the report pipe closed): the program runs.
    func sessionStarted(_ session: Session)
    func sessionOutput(_ session: Session, kind: FrameKind, _ bytes: UnsafeRawBufferPointer)
    /// The leader was reaped (output read before the exit came first).
    func sessionExited(_ session: Session, _ exited: Exited)
    func sessionFailedToStart(_ session: Session, _ failure: SpawnFailure)
    /// Every output stream is closed: no more `sessionOutput`.
    func sessionOutputClosed(_ session: Session)
}

/// The client watching a session: the link to the host, the id the client chose, and the
/// flow control that lasts as long as that client watches.
struct SessionClient {
    let link: FramedConnection
    let id: UInt32
    /// Output bytes the client still accepts before it acks more.
    var window = FlowControl.initialWindowBytes
    /// Waiting for the link to drain (the owner resumes the session then).
    var waitsForRoom = false

    init(link: FramedConnection, id: UInt32) {
        self.link = link
        self.id = id
    }
}

/// A session's timers: the request's timeout, the kill after its grace, the drain after exit.
struct SessionTimers {
    var timeout: TimerID?
    var kill: TimerID?
    var drain: TimerID?
    /// The request's timeout went off (and sent SIGTERM): `exited` says so.
    var timeoutFired = false

    mutating func cancelTimeout(on loop: EventLoop) {
        if let timeout { loop.cancel(timeout) }
        timeout = nil
    }

    mutating func cancelAll(on loop: EventLoop) {
        for timer in [timeout, kill, drain].compactMap({ $0 }) { loop.cancel(timer) }
        self = SessionTimers(timeoutFired: timeoutFired)
    }
}
