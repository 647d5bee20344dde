#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

// The client side: requests the relay answers itself (0x20-0x2F), sessions forwarded to the
// agent, flow control towards the client, detach/attach, and clients going away.
extension Relay {
    func handleClientFrame(_ view: FrameView, from client: ClientLink) {
        let header = view.header
        guard client.hello != nil || header.kind == .hello else {
            refuseBeforeHello(view, from: client)
            return
        }
        if header.id == 0 {
            handleClientControl(view, from: client)
            return
        }
        if header.flags.contains(.start) {
            guard client.sessions[header.id] == nil else {
                // Not on the session's own id: an END there would end the session in use.
                sendError(client, id: 0, .sessionInUse, "session id \(header.id) is still in use; its START (\(header.kind)) was ignored")
                return
            }
            switch header.kind {
            case .listSessions: listSessions(id: header.id, client: client)
            case .attach: attach(view, client: client)
            case .logs: startLogs(view, client: client)
            case .signalSession: signalSession(view, client: client)
            case let kind where kind.isSessionRequest:
                sendError(client, id: header.id, .unknownKind, "\(kind) cannot start a session")
            default: startForwarded(view, client: client)
            }
            return
        }
        // A frame for an id the client does not have open is late (it crossed the session's
        // END) or wrong; either way there is nothing to do with it.
        guard let session = client.sessions[header.id] else { return }
        switch header.kind {
        case .ack:
            guard let ack = try? Ack(cbor: view.payload) else {
                return sendError(client, id: 0, .badPayload, "ack on session \(header.id) is not {bytes}")
            }
            clientAcked(session, bytes: ack.bytes)
        case .stdin:
            clientStdin(view, session: session, client: client)
        case .detach:
            detach(session, client: client)
        case .kill where session.purpose == .logs:
            session.follower?.cancel()
        default:
            guard session.purpose != .logs else { return }
            if let agentID = session.agentID, !session.agentEnded { forwardToAgent(view.encoded, id: agentID) }
        }
    }

    /// A frame from a client that has not said hello: nothing runs before the client said who
    /// it is and which protocol version it speaks. A request gets `helloRequired` (with END on
    /// its own id); the connection stays open, so a hello sent next still works.
    private func refuseBeforeHello(_ view: FrameView, from client: ClientLink) {
        let header = view.header
        if header.id == 0 {
            // A pong or an error answers something and asks for nothing.
            guard header.kind != .pong && header.kind != .error else { return }
            sendError(client, id: 0, .helloRequired, "\(header.kind) before hello: send hello first")
        } else if header.flags.contains(.start) {
            sendError(client, id: header.id, .helloRequired, "\(header.kind) before hello: send hello first; nothing was started")
        }
        // A frame for a session is for no session: none can be open before hello.
    }

    private func handleClientControl(_ view: FrameView, from client: ClientLink) {
        switch view.header.kind {
        case .hello:
            do {
                let hello = try Hello(cbor: view.payload)
                guard hello.version >= 1 else {
                    sendError(client, id: 0, .unsupported, "this relay speaks protocol version \(protocolVersion)")
                    flush(client)
                    close(client: client, reason: "protocol version \(hello.version)")
                    return
                }
                client.hello = hello
            } catch {
                sendError(client, id: 0, .badPayload, "hello: \(error.description)")
            }
        case .ping:
            guard let ping = try? Ping(cbor: view.payload) else {
                return sendError(client, id: 0, .badPayload, "ping is not {nonce}")
            }
            forwardPing(ping, from: client)
        case .pong, .error:
            break
        case .shutdown:
            // Power the sandbox off: the agent's business (`tether stop`).
            if state == .ready {
                forwardToAgent(view.encoded, id: 0)
            } else {
                sendError(client, id: 0, .agentNotReady, "the relay is not connected to its agent")
            }
        default:
            sendError(client, id: 0, .unknownKind, "\(view.header.kind) is not a control-channel kind")
        }
    }

    // MARK: sessions forwarded to the agent

    /// Why a new session cannot go to the agent right now, if it cannot.
    private func agentRefusal() -> (ErrorCode, String)? {
        if state != .ready { return (.agentNotReady, "the relay is connecting to its agent; try again") }
        if unresponsive { return (.agentUnresponsive, "the agent has not answered for over \(configuration.unresponsiveAfter)") }
        return nil
    }

    private func startForwarded(_ view: FrameView, client: ClientLink) {
        let header = view.header
        if let (code, message) = agentRefusal() { return sendError(client, id: header.id, code, message) }
        var request: ExecRequest?
        if header.kind == .exec {
            do { request = try ExecRequest(cbor: view.payload) } catch {
                return sendError(client, id: header.id, .badPayload, "exec: \(error.description)")
            }
        }
        let id = allocateID()
        let session = RelaySession(purpose: .forwarded, number: id, agentID: id)
        session.owner = client
        session.clientID = header.id
        session.startedNs = Clock.realtimeNs()
        if let request {
            session.isExec = true
            session.argv = request.argv.map(\.description)
            session.tty = request.tty != nil
            session.detachable = request.detach
            record(id, .exec(argv: session.argv, cwd: request.cwd?.description, user: request.user, tty: session.tty,
                             stdin: request.stdin == .pipe, detach: request.detach))
        }
        client.sessions[header.id] = session
        agentSessions[id] = session
        sessionsByNumber[id] = session
        forwardToAgent(view.encoded, id: id)
    }

    private func clientStdin(_ view: FrameView, session: RelaySession, client: ClientLink) {
        guard let agentID = session.agentID, !session.agentEnded, session.purpose != .logs else { return }
        let count = view.header.payloadCount
        session.stdinOutstanding += Int64(count)
        // The agent acks stdin as it writes it; a client far past the window is not reading
        // its acks or ignoring them, and would fill the agent's queue for everyone.
        if session.stdinOutstanding > 2 * OutputFlow.window {
            sendError(client, id: session.clientID, .protocolViolation, "stdin sent past the window without waiting for acks")
            client.sessions[session.clientID] = nil
            abandon(session, reason: "stdin past the window")
            return
        }
        if count > 0 && session.isListed { record(session.number, .data(.stdin, Array(view.payload))) }
        forwardToAgent(view.encoded, id: agentID)
    }

    // MARK: output towards the client

    func clientAcked(_ session: RelaySession, bytes: UInt64) {
        if session.purpose == .logs {
            session.follower?.grant(Int(clamping: bytes))
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
            if entry.kind.isData {
                let credit = session.flow.clientCredit
                guard credit > 0 else { break }
                let take = min(Int(credit), entry.remaining, Frame.maxDataPayloadBytes)
                let flags: FrameFlags = take == entry.remaining ? entry.flags : []
                entry.payload.withUnsafeBytes { raw in
                    owner.socket.encoder.append(id: session.clientID, flags: flags, kind: entry.kind,
                                                payload: UnsafeRawBufferPointer(rebasing: raw[entry.offset..<(entry.offset + take)]))
                }
                session.flow.sentToClient(take)
                session.flow.pending.consumeData(take)
                wrote = true
                if flags.contains(.end) {
                    endedToClient(session)
                    break
                }
            } else {
                owner.socket.encoder.append(id: session.clientID, flags: entry.flags, kind: entry.kind, payload: entry.payload)
                session.flow.pending.removeFirst()
                wrote = true
                if entry.flags.contains(.end) {
                    endedToClient(session)
                    break
                }
            }
        }
        if wrote { markDirty(owner) }
    }

    /// Acks the agent what the session's reader has made room for.
    func grantAgent(_ session: RelaySession) {
        guard let agentID = session.agentID, !session.agentEnded else { return }
        let grant = session.flow.agentGrant(attached: session.owner != nil)
        if grant > 0 { sendToAgent(id: agentID, Ack(bytes: UInt64(grant))) }
    }

    /// The session's END is in its client's queue: the client id is free again.
    func endedToClient(_ session: RelaySession) {
        if let owner = session.owner, owner.sessions[session.clientID] === session { owner.sessions[session.clientID] = nil }
        session.owner = nil
        if session.agentEnded || session.agentID == nil { removeSession(session) }
    }

    func removeSession(_ session: RelaySession) {
        if let agentID = session.agentID, agentSessions[agentID] === session { agentSessions[agentID] = nil }
        if sessionsByNumber[session.number] === session { sessionsByNumber[session.number] = nil }
    }

    /// Kills a session nobody will read and throws its output away until the agent ends it.
    private func abandon(_ session: RelaySession, reason: String) {
        session.owner = nil
        guard let agentID = session.agentID, !session.agentEnded else {
            removeSession(session)
            return
        }
        session.abandoned = true
        session.flow.resetClient()
        _ = session.flow.pending.removeAllData()
        sendToAgent(id: agentID, KillRequest())
        grantAgent(session)
        if session.isListed { record(session.number, .killed(reason: reason)) }
    }

    /// The session's client went away (or closed): detached sessions stay, the rest are killed.
    func clientLeft(_ session: RelaySession, reason: String) {
        switch session.purpose {
        case .logs:
            session.follower?.cancel()
            session.owner = nil
        case .adoptionList:
            break
        case .forwarded, .adopted:
            if session.detachable {
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
        session.owner = nil
        session.flow.resetClient()
        if session.agentEnded {
            if session.agentID == nil && !session.flow.pending.isEmpty {
                finishedDetached.append(session.number)
            } else {
                removeSession(session)
            }
            return
        }
        let dropped = session.flow.pending.trimData(toAtMost: configuration.replayBytes)
        session.flow.droppedBytes += UInt64(dropped)
        grantAgent(session)
    }

    // MARK: requests the relay answers

    private func listSessions(id: UInt32, client: ClientLink) {
        let sessions = sessionsByNumber.values.filter(\.isListed).sorted { $0.number < $1.number }.map(\.info)
        send(client, id: id, flags: .end, SessionList(sessions: sessions))
    }

    private func attach(_ view: FrameView, client: ClientLink) {
        let id = view.header.id
        let request: Attach
        do { request = try Attach(cbor: view.payload) } catch {
            return sendError(client, id: id, .badPayload, "attach: \(error.description)")
        }
        guard let session = sessionsByNumber[request.session], session.isListed else {
            return sendError(client, id: id, .unknownSession, "no session \(request.session) (tether ps lists them)")
        }
        guard session.owner == nil else {
            return sendError(client, id: id, .sessionInUse, "session \(request.session) is attached to another client")
        }
        guard session.detachable else {
            return sendError(client, id: id, .sessionInUse, "session \(request.session) belongs to the client that started it; only detached sessions can be attached")
        }
        finishedDetached.removeAll { $0 == session.number }
        session.owner = client
        session.clientID = id
        session.flow.resetClient()
        if !request.replay { _ = session.flow.pending.removeAllData() }
        let dropped = session.flow.droppedBytes
        session.flow.droppedBytes = 0
        client.sessions[id] = session
        send(client, id: id, Attached(session: session.number, pid: session.pid, tty: session.tty, droppedBytes: dropped))
        record(session.number, .attached(droppedBytes: dropped))
        flushSession(session)
        if session.owner != nil { grantAgent(session) }
    }

    /// `detach` from the attached client: the session stays, the client id ends.
    private func detach(_ session: RelaySession, client: ClientLink) {
        guard session.isListed else {
            return sendError(client, id: 0, .unknownKind, "session \(session.clientID) cannot be detached")
        }
        client.sessions[session.clientID] = nil
        send(client, id: session.clientID, flags: .end, Detached(session: session.number))
        if !session.detachable, let agentID = session.agentID, !session.agentEnded {
            // The agent kills non-detached sessions when the relay's connection drops; tell it,
            // and attach again once it has let go (see `reattach`).
            session.detachable = true
            session.reattachPending = true
            sendToAgent(id: agentID, Detach())
        }
        session.detachable = true
        unbind(session)
        record(session.number, .detached)
    }

    private func signalSession(_ view: FrameView, client: ClientLink) {
        let id = view.header.id
        let request: SignalSession
        do { request = try SignalSession(cbor: view.payload) } catch {
            return sendError(client, id: id, .badPayload, "signalSession: \(error.description)")
        }
        guard let session = sessionsByNumber[request.session], session.isListed,
              let agentID = session.agentID, !session.agentEnded else {
            return sendError(client, id: id, .unknownSession, "no running session \(request.session)")
        }
        sendToAgent(id: agentID, SignalRequest(number: request.number))
        send(client, id: id, flags: .end, Done())
    }

    private func startLogs(_ view: FrameView, client: ClientLink) {
        let id = view.header.id
        let request: LogsRequest
        do { request = try LogsRequest(cbor: view.payload) } catch {
            return sendError(client, id: id, .badPayload, "logs: \(error.description)")
        }
        guard let log else { return sendError(client, id: id, .unknownKind, "this relay writes no exec.log (started with --no-log)") }
        let key = nextLogKey
        nextLogKey += 1
        let session = RelaySession(purpose: .logs, number: 0, agentID: nil)
        session.owner = client
        session.clientID = id
        let follower = LogFollower(log: log, session: request.session, follow: request.follow,
                                   initialCredit: FlowControl.initialWindowBytes) { [weak self] output in
            self?.post(.logOutput(key: key, output))
        }
        session.follower = follower
        client.sessions[id] = session
        logSessions[key] = session
        follower.start()
    }

    func logOutput(key: UInt64, _ output: LogFollower.Output) {
        guard let session = logSessions[key] else { return }
        switch output {
        case .bytes(let bytes):
            guard let owner = session.owner else { return }
            owner.socket.encoder.append(id: session.clientID, kind: .stdout, payload: bytes)
            markDirty(owner)
        case .end:
            logSessions[key] = nil
            guard let owner = session.owner else { return }
            owner.sessions[session.clientID] = nil
            session.owner = nil
            send(owner, id: session.clientID, flags: .end, Done())
        }
    }
}
