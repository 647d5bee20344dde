import TetherProtocol

/// One session as the relay sees it: its number, the agent id it runs on, which client (and
/// that client's id for it) is attached, what `sessionList` reports, and its output flow.
///
/// Touched only by the relay's loop thread. Lives from the request that created it until
/// both sides are done with it: the agent sent END (or the connection to it dropped), and
/// the END reached the client (or nobody is attached and it was not detached).
final class RelaySession {
    enum Purpose {
        /// `exec` or any other kind a client starts that the relay forwards to the agent.
        case forwarded
        /// A session the relay took over from the agent after connecting (`attach`).
        case adopted
        /// The relay's own `listSessions` to the agent, to adopt detached sessions.
        case adoptionList
        /// A `logs` request, served by a `LogFollower` (never reaches the agent).
        case logs
    }

    let purpose: Purpose
    /// The relay's number for the session (`sessionList`, `tether ps`, exec.log). 0 for
    /// internal sessions, which are not listed.
    let number: UInt32
    /// The id on the agent connection; nil once the agent ended it (or never, for logs).
    var agentID: UInt32?

    /// The attached client and its id for this session.
    weak var owner: ClientLink?
    var clientID: UInt32 = 0

    /// Started by an `exec` (rather than a kind the relay does not know, passed through).
    var isExec = false
    // What `sessionList` reports.
    var argv: [String] = []
    var pid: Int32 = 0
    var tty = false
    var startedNs: UInt64 = 0
    var exited: Exited?
    /// Survives its client: the exec asked for `detach`, or a client sent `detach`.
    var detachable = false
    /// A `detach` was forwarded to the agent; its `detached` reply is to be followed by an
    /// `attach` on a new id, so the relay keeps the output (see `Relay+Agent.swift`).
    var reattachPending = false

    /// The agent sent END (done, failed, error): nothing more will come from it.
    var agentEnded = false
    /// The relay sent `kill` because the client went away; the output is thrown away.
    var abandoned = false

    var flow = OutputFlow()
    /// Stdin bytes forwarded to the agent and not yet acked by it.
    var stdinOutstanding: Int64 = 0
    /// For `.logs`: the thread reading exec.log.
    var follower: LogFollower?

    init(purpose: Purpose, number: UInt32, agentID: UInt32?) {
        self.purpose = purpose
        self.number = number
        self.agentID = agentID
    }

    var isListed: Bool { (purpose == .forwarded && isExec) || purpose == .adopted }

    var info: SessionInfo {
        SessionInfo(session: number, pid: pid, argv: argv, tty: tty, detached: detachable, attached: owner != nil,
                    startedNs: startedNs, exited: exited)
    }
}
