import TetherProtocol

/// One session as the relay sees it: its number, what it is (`Role`), where it stands with
/// the agent and who reads it (`State`), and its output flow.
///
/// Touched only by the relay's loop thread. Lives from the request that created it until
/// both sides are done with it: the agent sent END (or the connection to it dropped), and
/// the END reached the client (or nobody is attached and it was not detached). The
/// `SessionTable` holds it; `ExecSessions` moves it from state to state.
final class RelaySession {
    /// What the session is; fixed when it is created.
    enum Role {
        /// An `exec`, started by a client or adopted from the agent: listed by `sessionList`,
        /// written to exec.log, attachable once detached.
        case exec(Listing)
        /// A kind the relay does not know, started by a client and passed through to the agent.
        case passthrough
        /// The relay's own `listSessions` to the agent, to adopt detached sessions.
        case adoptionList
        /// A `logs` request, served by a `LogFollower` (never reaches the agent).
        case logs(LogFollower)
    }

    /// What `sessionList` reports of an exec besides its number and state.
    final class Listing {
        var argv: [String]
        var pid: Int32 = 0
        var tty: Bool
        var startedNs: UInt64
        var exited: Exited?
        /// Taken over from the agent after a (re)connect rather than started by a client.
        let adopted: Bool

        init(argv: [String], tty: Bool, startedNs: UInt64, adopted: Bool) {
            self.argv = argv
            self.tty = tty
            self.startedNs = startedNs
            self.adopted = adopted
        }
    }

    /// Who reads the session's output.
    enum Reader {
        /// A client, under its own id for the session. `survivesClient`: the session stays
        /// when this client goes (the exec asked for `detach`, or it was attached).
        case client(Attachment)
        /// Nobody: the relay keeps reading it into the bounded replay buffer for an `attach`.
        case relay
    }

    /// The attached client. Weak: a client that is closed lets go of its sessions first
    /// (`ExecSessions.clientLeft`); this only keeps a mistake from keeping a socket alive.
    struct Attachment {
        weak var client: ClientLink?
        var clientID: UInt32
        var survivesClient: Bool
    }

    /// The whole state of a session in one value.
    enum State {
        /// Runs on the agent under `agentID`.
        case live(agentID: UInt32, reader: Reader)
        /// A `detach` went to the agent for a session the agent would kill with the relay's
        /// connection; its `detached` END is followed by an `attach` on a new id.
        case reattaching(agentID: UInt32, reader: Reader)
        /// Its client went away and it does not survive that: the relay sent `kill` and throws
        /// the output away until the agent's END.
        case abandoned(agentID: UInt32)
        /// The agent sent END (or never had it, for `logs`): nothing more comes from the agent;
        /// what is queued still goes to the reader.
        case ended(reader: Reader)
    }

    let number: UInt32
    let role: Role
    var state: State
    var flow = OutputFlow()
    /// Stdin bytes forwarded to the agent and not yet acked by it.
    var stdinOutstanding: Int64 = 0

    /// `number`: the relay's number for the session (`sessionList`, `tether ps`, exec.log);
    /// 0 for internal sessions, which are not listed.
    init(number: UInt32, role: Role, state: State) {
        self.number = number
        self.role = role
        self.state = state
    }

    // MARK: reading the state

    var listing: Listing? {
        if case .exec(let listing) = role { return listing }
        return nil
    }

    var isListed: Bool { listing != nil }

    var isLogs: Bool {
        if case .logs = role { return true }
        return false
    }

    var follower: LogFollower? {
        if case .logs(let follower) = role { return follower }
        return nil
    }

    /// The id on the agent connection; nil once the agent ended it (or never, for logs).
    var agentID: UInt32? {
        switch state {
        case .live(let id, _), .reattaching(let id, _), .abandoned(let id): id
        case .ended: nil
        }
    }

    var reader: Reader? {
        switch state {
        case .live(_, let reader), .reattaching(_, let reader), .ended(let reader): reader
        case .abandoned: nil
        }
    }

    var attachment: Attachment? {
        if case .client(let attachment)? = reader { return attachment }
        return nil
    }

    /// The attached client, if one is.
    var owner: ClientLink? { attachment?.client }
    var clientID: UInt32 { attachment?.clientID ?? 0 }

    var isAbandoned: Bool {
        if case .abandoned = state { return true }
        return false
    }

    var isReattaching: Bool {
        if case .reattaching = state { return true }
        return false
    }

    /// Stays when its client goes: detached, or started or attached as detachable. An unread
    /// session is one the relay keeps for an `attach`.
    var survivesClient: Bool {
        switch reader {
        case .client(let attachment)?: attachment.survivesClient
        case .relay?: true
        case nil: false
        }
    }

    var info: SessionInfo {
        let listing = listing
        return SessionInfo(session: number, pid: listing?.pid ?? 0, argv: listing?.argv ?? [], tty: listing?.tty ?? false,
                           detached: survivesClient, attached: owner != nil, startedNs: listing?.startedNs ?? 0,
                           exited: listing?.exited)
    }

    // MARK: changing the state

    /// The reader changes (an attach, a detach, a client gone); the agent side stays.
    func setReader(_ reader: Reader) {
        switch state {
        case .live(let id, _): state = .live(agentID: id, reader: reader)
        case .reattaching(let id, _): state = .reattaching(agentID: id, reader: reader)
        case .ended: state = .ended(reader: reader)
        case .abandoned: break
        }
    }

    /// The agent sent END, or let go of the session.
    func agentEnded() {
        state = .ended(reader: reader ?? .relay)
    }

    /// The session runs on the agent under a new id, keeping its reader.
    func agentMoved(to id: UInt32) {
        state = .live(agentID: id, reader: reader ?? .relay)
    }
}
