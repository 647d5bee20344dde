import TetherPosix
import TetherProtocol

/// The exec sessions: the relay's one subsystem today (files, ports and processes come as
/// others beside it). It owns every `RelaySession` (in its `SessionTable`) and moves each from
/// state to state: sessions forwarded to the agent, flow control towards the client,
/// detach/attach, the requests the relay answers itself (0x20-0x2F), clients going away here;
/// what the agent sends in `ExecSessions+Agent.swift`.
///
/// The router (`Relay`) hands it frames; it writes through `ClientLinks` and `AgentChannel`
/// and never calls back into the router. Touched only by the relay's loop thread.
final class ExecSessions {
    let configuration: RelayConfiguration
    let log: ExecLog?
    let clients: ClientLinks
    let agent: AgentChannel
    /// Hands a `logs` reader's output to the loop thread (the relay's inbox).
    private let postLogOutput: @Sendable (UInt64, LogFollower.Output) -> Void
    var table = SessionTable()

    init(configuration: RelayConfiguration, log: ExecLog?, clients: ClientLinks, agent: AgentChannel,
         postLogOutput: @escaping @Sendable (UInt64, LogFollower.Output) -> Void) {
        self.configuration = configuration
        self.log = log
        self.clients = clients
        self.agent = agent
        self.postLogOutput = postLogOutput
    }

    /// An exec-log entry; built only when there is a log (`.data` entries copy their payload).
    func record(_ session: UInt32, _ event: @autoclosure () -> LogEvent) {
        guard let log else { return }
        log.record(session: session, event())
    }

    func diagnose(_ line: String) { configuration.diagnostics(line) }

    /// Stops every `logs` reader (the relay is stopping).
    func cancelLogReaders() {
        for session in table.logs.values { session.follower?.cancel() }
    }

    /// A request's payload, or the `badPayload` refusal that names its kind.
    private func decode<M: Message>(_ type: M.Type, _ view: FrameView) throws(RelayRefusal) -> M {
        do { return try M(cbor: view.payload) } catch {
            throw RelayRefusal(.badPayload, "\(M.kind.name ?? "\(M.kind)"): \(error.description)")
        }
    }

    // MARK: frames on a session

    /// A frame on a session id the client has open (or had: a frame for an id the client
    /// does not have open is late, having crossed the session's END, or wrong; either way
    /// there is nothing to do with it).
    func sessionFrame(_ view: FrameView, from client: ClientLink) throws(RelayRefusal) {
        let header = view.header
        guard let session = client.sessions[header.id] else { return }
        switch header.kind {
        case .ack:
            guard let ack = try? Ack(cbor: view.payload) else {
                throw RelayRefusal(.badPayload, "ack on session \(header.id) is not {bytes}").onControl
            }
            clientAcked(session, bytes: ack.bytes)
        case .stdin:
            try clientStdin(view, session: session, client: client)
        case .detach:
            try detach(session, client: client)
        case .kill where session.isLogs:
            session.follower?.cancel()
        default:
            guard !session.isLogs, let agentID = session.agentID else { return }
            agent.forward(view.encoded, id: agentID)
        }
    }

    // MARK: sessions forwarded to the agent

    func startForwarded(_ view: FrameView, from client: ClientLink) throws(RelayRefusal) {
        let header = view.header
        if let refusal = agent.refusalForNewSession() { throw refusal }
        let request = header.kind == .exec ? try decode(ExecRequest.self, view) : nil
        let id = table.allocateID()
        var role = RelaySession.Role.passthrough
        if let request {
            let listing = RelaySession.Listing(argv: request.argv.map(\.description), tty: request.tty != nil,
                                               startedNs: Clock.realtimeNs(), adopted: false)
            role = .exec(listing)
            record(id, .exec(argv: listing.argv, cwd: request.cwd?.description, user: request.user, tty: listing.tty,
                             stdin: request.stdin == .pipe, detach: request.detach))
        }
        let reader = RelaySession.Reader.client(.init(client: client, clientID: header.id, survivesClient: request?.detach ?? false))
        let session = RelaySession(number: id, role: role, state: .live(agentID: id, reader: reader))
        client.sessions[header.id] = session
        table.insert(session)
        agent.forward(view.encoded, id: id)
    }

    func clientStdin(_ view: FrameView, session: RelaySession, client: ClientLink) throws(RelayRefusal) {
        guard !session.isLogs, let agentID = session.agentID else { return }
        let count = view.header.payloadCount
        session.stdinOutstanding += Int64(count)
        // The agent acks stdin as it writes it; a client far past the window is not reading
        // its acks or ignoring them, and would fill the agent's queue for everyone.
        if session.stdinOutstanding > 2 * OutputFlow.window {
            client.sessions[session.clientID] = nil
            abandon(session, reason: "stdin past the window")
            throw RelayRefusal(.protocolViolation, "stdin sent past the window without waiting for acks")
        }
        if count > 0 && session.isListed && log?.configuration.recordsStdin == true {
            record(session.number, .data(.stdin, Array(view.payload)))
        }
        agent.forward(view.encoded, id: agentID)
    }

    // MARK: output towards the client

    func clientAcked(_ session: RelaySession, bytes: UInt64) {
        if let follower = session.follower {
            follower.grant(Int(clamping: bytes))
            return
        }
        session.flow.clientAcked(bytes)
        flushSession(session)
        grantAgent(session)
    }

    /// Sends queued frames while the client has window.
    func flushSession(_ session: RelaySession) {
        guard let owner = session.owner else { return }
        var wrote = false
        while let entry = session.flow.pending.first {
            var flags = entry.flags
            if entry.kind.isData {
                let credit = session.flow.clientCredit
                guard credit > 0 else { break }
                let take = min(Int(credit), entry.remaining, Frame.maxDataPayloadBytes)
                if take < entry.remaining { flags = [] }
                entry.payload.withUnsafeBytes { raw in
                    owner.socket.encoder.append(id: session.clientID, flags: flags, kind: entry.kind,
                                                payload: UnsafeRawBufferPointer(rebasing: raw[entry.offset..<(entry.offset + take)]))
                }
                session.flow.sentToClient(take)
                session.flow.pending.consumeData(take)
            } else {
                owner.socket.encoder.append(id: session.clientID, flags: flags, kind: entry.kind, payload: entry.payload)
                session.flow.pending.removeFirst()
            }
            wrote = true
            if flags.contains(.end) {
                endedToClient(session)
                break
            }
        }
        if wrote { clients.markDirty(owner) }
    }

    /// Acks the agent what the session's reader has made room for.
    func grantAgent(_ session: RelaySession) {
        guard let agentID = session.agentID else { return }
        let grant = session.flow.agentGrant(attached: session.owner != nil)
        if grant > 0 { agent.send(id: agentID, Ack(bytes: UInt64(grant))) }
    }

    /// The session's END is in its client's queue: the client id is free again.
    func endedToClient(_ session: RelaySession) {
        if let owner = session.owner, owner.sessions[session.clientID] === session { owner.sessions[session.clientID] = nil }
        session.setReader(.relay)
        if session.agentID == nil { table.remove(session) }
    }

    /// Kills a session nobody will read and throws its output away until the agent ends it.
    private func abandon(_ session: RelaySession, reason: String) {
        guard let agentID = session.agentID else {
            session.setReader(.relay)
            return table.remove(session)
        }
        session.state = .abandoned(agentID: agentID)
        session.flow.resetClient()
        _ = session.flow.pending.removeAllData()
        agent.send(id: agentID, KillRequest())
        grantAgent(session)
        if session.isListed { record(session.number, .killed(reason: reason)) }
    }

    /// The session's client went away (or closed): detached sessions stay, the rest are killed.
    func clientLeft(_ session: RelaySession, reason: String) {
        switch session.role {
        case .logs(let follower):
            follower.cancel()
            session.setReader(.relay)
        case .adoptionList:
            break
        case .exec, .passthrough:
            if session.survivesClient {
                // Bytes already written towards the vanished client and not acked by it: the
                // relay keeps no copy (that would be a copy of every byte on the hot path), so
                // the next attach hears of them as dropped rather than not at all.
                session.flow.droppedBytes += UInt64(max(0, session.flow.clientOutstanding))
                unbind(session)
                if session.isListed { record(session.number, .detached) }
            } else {
                abandon(session, reason: "client gone: \(reason)")
            }
        }
    }

    /// Nobody is attached any more; the relay reads the session into its replay buffer.
    private func unbind(_ session: RelaySession) {
        session.setReader(.relay)
        session.flow.resetClient()
        guard session.agentID != nil else {
            if session.flow.pending.isEmpty { table.remove(session) } else { table.keepFinished(session.number) }
            return
        }
        let dropped = session.flow.pending.trimData(toAtMost: configuration.replayBytes)
        session.flow.droppedBytes += UInt64(dropped)
        grantAgent(session)
    }

    // MARK: requests the relay answers

    func listSessions(_ view: FrameView, from client: ClientLink) throws(RelayRefusal) {
        clients.send(client, id: view.header.id, flags: .end, SessionList(sessions: table.listed))
    }

    func attach(_ view: FrameView, from client: ClientLink) throws(RelayRefusal) {
        let id = view.header.id
        let request = try decode(Attach.self, view)
        guard let session = table.byNumber[request.session], let listing = session.listing else {
            throw RelayRefusal(.unknownSession, "no session \(request.session) (tether ps lists them)")
        }
        guard session.owner == nil else {
            throw RelayRefusal(.sessionInUse, "session \(request.session) is attached to another client")
        }
        guard session.survivesClient else {
            throw RelayRefusal(.sessionInUse, "session \(request.session) belongs to the client that started it; only detached sessions can be attached")
        }
        table.forgetFinished(session.number)
        session.setReader(.client(.init(client: client, clientID: id, survivesClient: true)))
        session.flow.resetClient()
        if !request.replay { _ = session.flow.pending.removeAllData() }
        let dropped = session.flow.droppedBytes
        session.flow.droppedBytes = 0
        client.sessions[id] = session
        clients.send(client, id: id, Attached(session: session.number, pid: listing.pid, tty: listing.tty, droppedBytes: dropped))
        record(session.number, .attached(droppedBytes: dropped))
        flushSession(session)
        if session.owner != nil { grantAgent(session) }
    }

    /// `detach` from the attached client: the session stays, the client id ends.
    func detach(_ session: RelaySession, client: ClientLink) throws(RelayRefusal) {
        guard session.isListed else {
            throw RelayRefusal(.unknownKind, "session \(session.clientID) cannot be detached").onControl
        }
        client.sessions[session.clientID] = nil
        clients.send(client, id: session.clientID, flags: .end, Detached(session: session.number))
        if !session.survivesClient, case .live(let agentID, let reader) = session.state {
            // The agent kills non-detached sessions when the relay's connection drops; tell it,
            // and attach again once it has let go (see `reattach`).
            session.state = .reattaching(agentID: agentID, reader: reader)
            agent.send(id: agentID, Detach())
        }
        unbind(session)
        record(session.number, .detached)
    }

    func signalSession(_ view: FrameView, from client: ClientLink) throws(RelayRefusal) {
        let id = view.header.id
        let request = try decode(SignalSession.self, view)
        guard let session = table.byNumber[request.session], session.isListed, let agentID = session.agentID else {
            throw RelayRefusal(.unknownSession, "no running session \(request.session)")
        }
        agent.send(id: agentID, SignalRequest(number: request.number))
        clients.send(client, id: id, flags: .end, Done())
    }

    func startLogs(_ view: FrameView, from client: ClientLink) throws(RelayRefusal) {
        let id = view.header.id
        let request = try decode(LogsRequest.self, view)
        guard let log else { throw RelayRefusal(.unknownKind, "this relay writes no exec.log (started with --no-log)") }
        let key = table.allocateLogKey()
        let follower: LogFollower
        do {
            follower = try LogFollower(log: log, session: request.session, follow: request.follow,
                                       initialCredit: FlowControl.initialWindowBytes) { [postLogOutput] output in
                postLogOutput(key, output)
            }
        } catch {
            throw RelayRefusal(.limitReached, "cannot follow exec.log: eventfd: \(error)")
        }
        // Nothing comes from the agent for it: it is `ended` on that side from the start.
        let reader = RelaySession.Reader.client(.init(client: client, clientID: id, survivesClient: false))
        let session = RelaySession(number: 0, role: .logs(follower), state: .ended(reader: reader))
        client.sessions[id] = session
        table.insertLogs(session, key: key)
        follower.start()
    }

    func logOutput(key: UInt64, _ output: LogFollower.Output) {
        guard let session = table.logs[key] else { return }
        switch output {
        case .bytes(let bytes):
            guard let owner = session.owner else { return }
            owner.socket.encoder.append(id: session.clientID, kind: .stdout, payload: bytes)
            clients.markDirty(owner)
        case .end:
            table.removeLogs(key: key)
            guard let owner = session.owner else { return }
            let clientID = session.clientID
            owner.sessions[clientID] = nil
            session.setReader(.relay)
            clients.send(owner, id: clientID, flags: .end, Done())
        }
    }
}
