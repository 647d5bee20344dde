import TetherPosix
import TetherProtocol

// The exec sessions' side towards the agent: one dispatch table from the kind of a frame on
// a session id to what handles it, the agent's loss, and adoption of detached sessions after
// a (re)connect.
extension ExecSessions {
    /// The agent connection dropped: every session on it ends with `agentGone`.
    func agentLost(message: String) {
        for session in table.allForwarded where !session.isLogs {
            if session.isListed { record(session.number, .error(code: ErrorCode.agentGone.rawValue, message: message)) }
            if let owner = session.owner {
                owner.sessions[session.clientID] = nil
                clients.refuse(owner, id: session.clientID, RelayRefusal(.agentGone, message))
            }
            session.setReader(.relay)
        }
        table.removeAllForwarded()
    }

    // MARK: frames on session ids

    /// The dispatch table of the agent side for session ids. Frames for ids the relay does not
    /// know are late (the session ended) and dropped.
    func agentFrame(_ view: FrameView) {
        let header = view.header
        guard let session = table.byAgentID[header.id] else { return }
        switch header.kind {
        case .stdout, .stderr:
            return agentData(view, session: session)
        case .ack:
            return agentAcked(view, session: session)
        case .sessionList where isAdoptionList(session):
            return adoptionListArrived(view)
        case .attached where session.listing.map({ $0.adopted || session.survivesClient }) ?? false:
            return relayAttachAnswered(view, session: session)
        case .detached where session.isReattaching:
            if header.flags.contains(.end) { reattach(session, agentSession: (try? Detached(cbor: view.payload))?.session) }
            return
        case .started, .exited, .failed, .error, .done:
            if session.isListed { recordLifecycle(view, session: session) }
        default:
            break
        }
        let wasAbandoned = session.isAbandoned
        let ended = header.flags.contains(.end)
        if ended {
            table.releaseAgentID(header.id)
            session.agentEnded()
        }
        if isAdoptionList(session) { return }
        if wasAbandoned {
            if ended { table.remove(session) }
            return
        }
        deliver(view, session: session)
        if session.agentID == nil && session.owner == nil { agentEndedUnattended(session) }
    }

    private func isAdoptionList(_ session: RelaySession) -> Bool {
        if case .adoptionList = session.role { return true }
        return false
    }

    /// What `sessionList` and exec.log learn from a session's lifecycle frames.
    private func recordLifecycle(_ view: FrameView, session: RelaySession) {
        guard let listing = session.listing else { return }
        switch view.header.kind {
        case .started:
            guard let started = try? Started(cbor: view.payload) else { return }
            listing.pid = started.pid
            record(session.number, .started(pid: started.pid))
        case .exited:
            guard let exited = try? Exited(cbor: view.payload) else { return }
            listing.exited = exited
            record(session.number, .exited(exited))
        case .failed:
            if let failed = try? Failed(cbor: view.payload) { record(session.number, .failed(failed)) }
        case .error:
            if let error = try? ErrorMessage(cbor: view.payload) { record(session.number, .error(code: error.code.rawValue, message: error.message)) }
        case .done:
            record(session.number, .end)
        default:
            break
        }
    }

    /// The agent wrote stdin to the program: the client may send more. Acks do not queue
    /// behind output, so a client waiting to write is never stuck behind reading.
    private func agentAcked(_ view: FrameView, session: RelaySession) {
        if let ack = try? Ack(cbor: view.payload) { session.stdinOutstanding -= Int64(clamping: ack.bytes) }
        if let owner = session.owner { clients.forward(view.encoded, to: owner, id: session.clientID) }
    }

    /// The agent's answer to the relay's own attach: what the agent lost while nobody read is
    /// lost to the next client too.
    private func relayAttachAnswered(_ view: FrameView, session: RelaySession) {
        guard let attached = try? Attached(cbor: view.payload), let listing = session.listing else { return }
        session.flow.droppedBytes += attached.droppedBytes
        listing.pid = attached.pid
        listing.tty = attached.tty
    }

    /// stdout/stderr from the agent: straight through when the client has window and nothing
    /// is queued before it, else queued (and, with nobody attached, kept as replay).
    private func agentData(_ view: FrameView, session: RelaySession) {
        let count = view.header.payloadCount
        session.flow.receivedFromAgent(count)
        if session.isListed {
            record(session.number, .data(view.header.kind == .stdout ? .stdout : .stderr, Array(view.payload)))
        }
        if session.isAbandoned { return grantAgent(session) }
        if let owner = session.owner, session.flow.pending.isEmpty, session.flow.clientCredit >= Int64(count) {
            clients.forward(view.encoded, to: owner, id: session.clientID)
            session.flow.sentToClient(count)
            return
        }
        session.flow.pending.append(kind: view.header.kind, flags: view.header.flags, payload: view.payload)
        // Nobody attached: keep the newest replayBytes. Attached: the agent keeps to the
        // window, so this bound is reached only by an agent that does not.
        let limit = configuration.replayBytes + (session.owner == nil ? 0 : 2 * Int(OutputFlow.maxWindow))
        let dropped = session.flow.pending.trimData(toAtMost: limit)
        if dropped > 0 { session.flow.droppedBytes += UInt64(dropped) }
        if session.owner != nil { flushSession(session) } else { grantAgent(session) }
    }

    /// A non-data frame for the session's client, in order behind anything queued.
    private func deliver(_ view: FrameView, session: RelaySession) {
        if let owner = session.owner, session.flow.pending.isEmpty {
            clients.forward(view.encoded, to: owner, id: session.clientID)
            if view.header.flags.contains(.end) { endedToClient(session) }
            return
        }
        session.flow.pending.append(kind: view.header.kind, flags: view.header.flags, payload: view.payload)
        if session.owner != nil { flushSession(session) }
    }

    /// The agent ended a session nobody is attached to.
    private func agentEndedUnattended(_ session: RelaySession) {
        guard session.survivesClient, session.isListed else { return table.remove(session) }
        // Kept, with its output and exit, for a later attach; the oldest beyond the bound go.
        table.keepFinished(session.number)
        table.trimFinished(toAtMost: configuration.maxFinishedDetached)
    }

    // MARK: adoption

    func requestAdoptionList() {
        let id = table.allocateID()
        table.insert(RelaySession(number: 0, role: .adoptionList, state: .live(agentID: id, reader: .relay)))
        agent.send(id: id, flags: .start, ListSessions())
    }

    private func adoptionListArrived(_ view: FrameView) {
        guard view.header.flags.contains(.end) else { return }
        table.releaseAgentID(view.header.id)
        if let list = try? SessionList(cbor: view.payload) { adopt(list.sessions) }
    }

    /// Takes over the agent's detached sessions nobody watches: attach to each on a new id,
    /// keeping the agent's number as the relay's when it is free.
    private func adopt(_ infos: [SessionInfo]) {
        for info in infos where info.detached && !info.attached {
            let id = table.allocateID(preferring: info.session)
            let listing = RelaySession.Listing(argv: info.argv, tty: info.tty, startedNs: info.startedNs, adopted: true)
            listing.pid = info.pid
            listing.exited = info.exited
            table.insert(RelaySession(number: id, role: .exec(listing), state: .live(agentID: id, reader: .relay)))
            agent.send(id: id, flags: .start, Attach(session: info.session, replay: true))
            record(id, .relay("adopted", detail: "agent session \(info.session), pid \(info.pid)"))
        }
        if !infos.isEmpty { diagnose("agent has \(infos.count) session(s); adopted the detached ones") }
    }

    /// The agent let go of a session the relay detached (`detached` END): attach to it again
    /// on a new id so the relay holds its output, as for a session started detached.
    private func reattach(_ session: RelaySession, agentSession: UInt32?) {
        if let old = session.agentID { table.releaseAgentID(old) }
        guard let agentSession else {
            session.agentEnded()
            return agentEndedUnattended(session)
        }
        let id = table.allocateID()
        session.agentMoved(to: id)
        session.flow.resetAgent()
        table.file(session, underAgentID: id)
        agent.send(id: id, flags: .start, Attach(session: agentSession, replay: true))
    }
}
