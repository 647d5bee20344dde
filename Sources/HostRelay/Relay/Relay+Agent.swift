#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

// The agent side: connecting (with retries until its hello arrives), liveness, routing its
// frames to clients, adoption of detached sessions, and what happens when it goes away.
extension Relay {
    // MARK: connecting

    func startConnecting() {
        state = .connecting
        connectDeadlineNs = Clock.monotonicNs() + nanoseconds(configuration.agentTimeout)
        launchConnector()
    }

    private func launchConnector() {
        if case .fd(let number) = configuration.agent, adoptedInheritedAgent {
            // The inherited descriptor was the agent connection and was closed with it; its
            // number may belong to something else by now (a client's socket), which adopting
            // it again would close.
            lastConnectError = "fd:\(number) was the agent connection and is closed; an inherited descriptor cannot be connected again"
            giveUpConnecting()
            return
        }
        let connector = AgentConnector(address: configuration.agent, deadlineNs: connectDeadlineNs) { [weak self] outcome in
            guard let self else {
                if case .connected(let fd) = outcome { _ = Glibc.close(fd) }
                return
            }
            post(.agent(outcome))
        }
        self.connector = connector
        connector.start()
    }

    func connectorReported(_ outcome: AgentConnector.Outcome) {
        connector = nil
        switch outcome {
        case .connected(let raw):
            guard !stopping else {
                _ = Glibc.close(raw)
                return
            }
            adoptAgentSocket(raw)
        case .failed(let why):
            lastConnectError = why
            giveUpConnecting()
        }
    }

    private func giveUpConnecting() {
        let seconds = Double(nanoseconds(configuration.agentTimeout)) / 1e9
        let error = RelayError.agentUnreachable(address: configuration.agent.description, seconds: seconds, lastError: lastConnectError)
        diagnose("\(error); stopping")
        record(0, .relay("agentUnreachable", detail: error.description))
        fail(error)
    }

    private func adoptAgentSocket(_ raw: CInt) {
        if case .fd = configuration.agent { adoptedInheritedAgent = true }
        let socket: FrameSocket
        do { socket = try FrameSocket(adopting: OwnedFD(adopting: raw)) } catch {
            lastConnectError = "fcntl: \(error)"
            retryConnecting()
            return
        }
        let link = AgentLink(socket: socket)
        do {
            try loop.watch(link.fd, events: EventLoop.readable | EventLoop.peerClosed) { [unowned self, weak link] events in
                guard let link, link === agent else { return }
                agentEvent(events)
            }
        } catch {
            lastConnectError = "epoll: \(error)"
            retryConnecting()
            return
        }
        agent = link
        // Each side sends hello at once, without waiting for the other's.
        link.socket.encoder.append(id: 0, Hello(role: .relay, name: configuration.name, pid: getpid()))
        scheduleFlush()
        link.helloTimer = loop.schedule(after: configuration.helloTimeout) { [unowned self, weak link] in
            guard let link, link === agent, link.hello == nil else { return }
            closeAgentSocket()
            lastConnectError = "connected, but no hello within \(configuration.helloTimeout)"
            retryConnecting()
        }
    }

    /// Another attempt if the deadline allows, else give up.
    private func retryConnecting() {
        guard !stopping else { return }
        if Clock.monotonicNs() < connectDeadlineNs {
            // A short pause, so a peer that closes at once does not make this a busy loop.
            loop.schedule(after: .milliseconds(50)) { [unowned self] in
                if !stopping && agent == nil && connector == nil { launchConnector() }
            }
        } else {
            giveUpConnecting()
        }
    }

    private func closeAgentSocket() {
        guard let agent else { return }
        if let timer = agent.helloTimer { loop.cancel(timer) }
        loop.unwatch(agent.fd)
        agent.socket.close()
        self.agent = nil
    }

    private func agentHelloArrived(_ hello: Hello, link: AgentLink) {
        if let timer = link.helloTimer { loop.cancel(timer) }
        link.helloTimer = nil
        guard hello.version >= 1 else {
            sendToAgent(id: 0, ErrorMessage(code: .unsupported, message: "this relay speaks protocol version \(protocolVersion)"))
            flushAgent()
            closeAgentSocket()
            fail(.agentIncompatible("it speaks protocol version \(hello.version), the relay \(protocolVersion)"))
            return
        }
        link.hello = hello
        agentHello = hello
        state = .ready
        unresponsive = false
        link.lastHeardNs = Clock.monotonicNs()
        let detail = "\(hello.name) pid \(hello.pid) version \(hello.agentVersion ?? "?") via \(configuration.agent)"
        diagnose((everConnected ? "reconnected to agent " : "connected to agent ") + detail)
        record(0, .relay("agentConnected", detail: detail))
        if !everConnected {
            everConnected = true
            startListening()
            scheduleLiveness()
        }
        requestAdoptionList()
    }

    // MARK: liveness

    private func scheduleLiveness() {
        let tick = min(configuration.pingInterval, configuration.unresponsiveAfter / 3)
        loop.schedule(after: tick) { [unowned self] in
            livenessTick()
            if !stopping { scheduleLiveness() }
        }
    }

    private func livenessTick() {
        guard state == .ready, let agent else { return }
        let nonce = nextNonce
        nextNonce += 1
        pings[nonce] = PendingPing(client: nil, clientNonce: 0)
        sendToAgent(id: 0, Ping(nonce: nonce))
        let silentNs = Clock.monotonicNs() - agent.lastHeardNs
        if !unresponsive && silentNs > nanoseconds(configuration.unresponsiveAfter) {
            unresponsive = true
            let message = "no frame from the agent for \(silentNs / 1_000_000) ms (limit \(configuration.unresponsiveAfter))"
            diagnose("agent unresponsive: \(message)")
            record(0, .relay("agentUnresponsive", detail: message))
            for client in clients.values { sendError(client, id: 0, .agentUnresponsive, message) }
            // Pings from clients would wait for ever: the id-0 error answers them.
            pings = pings.filter { $0.value.client == nil }
        }
    }

    /// A client's ping goes to the agent, so the round trip covers the whole path.
    func forwardPing(_ ping: Ping, from client: ClientLink) {
        if unresponsive {
            sendError(client, id: 0, .agentUnresponsive, "the agent has not answered for a while")
            return
        }
        guard state == .ready else {
            sendError(client, id: 0, .agentNotReady, "the relay is connecting to its agent")
            return
        }
        let nonce = nextNonce
        nextNonce += 1
        pings[nonce] = PendingPing(client: client, clientNonce: ping.nonce)
        sendToAgent(id: 0, Ping(nonce: nonce))
    }

    // MARK: reading

    private func agentEvent(_ events: UInt32) {
        guard let agent else { return }
        if events & EventLoop.writable != 0 { flushAgent() }
        guard self.agent === agent,
              events & (EventLoop.readable | EventLoop.peerClosed | EventLoop.hangUp | EventLoop.error) != 0 else { return }
        let outcome = agent.socket.read(chunk: 256 << 10, limit: 4 << 20)
        while self.agent === agent {
            do {
                let handled: Void? = try agent.socket.decoder.nextView { view in handleAgentFrame(view, link: agent) }
                if handled == nil { break }
            } catch {
                sendToAgent(id: 0, ErrorMessage(code: .framing, message: error.description))
                flushAgent()
                dropAgent(reason: "framing error from the agent: \(error.description)")
                return
            }
        }
        guard self.agent === agent else { return }
        if outcome.closed {
            dropAgent(reason: outcome.failure.map { "read failed: \($0)" } ?? "the agent closed the connection")
        } else if outcome.bytes >= 4 << 20 {
            loop.soon { [unowned self, weak agent] in
                if let agent, agent === self.agent { agentEvent(EventLoop.readable) }
            }
        }
        agent.socket.decoder.releaseStorageIfIdle()
    }

    private func handleAgentFrame(_ view: FrameView, link: AgentLink) {
        link.lastHeardNs = Clock.monotonicNs()
        if unresponsive {
            unresponsive = false
            diagnose("agent responsive again")
            record(0, .relay("agentResponsive", detail: ""))
        }
        let header = view.header
        if header.id == 0 {
            handleAgentControl(view, link: link)
            return
        }
        guard link.hello != nil, let session = agentSessions[header.id] else { return }  // late or unknown: dropped
        if header.kind == .stdout || header.kind == .stderr {
            agentData(view, session: session)
            return
        }
        switch header.kind {
        case .started:
            if let started = try? Started(cbor: view.payload) {
                session.pid = started.pid
                if session.isListed { record(session.number, .started(pid: started.pid)) }
            }
        case .exited:
            if let exited = try? Exited(cbor: view.payload) {
                session.exited = exited
                if session.isListed { record(session.number, .exited(exited)) }
            }
        case .failed:
            if session.isListed, let failed = try? Failed(cbor: view.payload) { record(session.number, .failed(failed)) }
        case .error:
            if session.isListed, let error = try? ErrorMessage(cbor: view.payload) {
                record(session.number, .error(code: error.code.rawValue, message: error.message))
            }
        case .done:
            if session.isListed { record(session.number, .end) }
        case .ack:
            // The agent wrote stdin to the program: the client may send more. Acks do not
            // queue behind output, so a client waiting to write is never stuck behind reading.
            if let ack = try? Ack(cbor: view.payload) { session.stdinOutstanding -= Int64(clamping: ack.bytes) }
            if let owner = session.owner, !session.abandoned {
                let offset = owner.socket.encoder.pendingBytes
                owner.socket.encoder.append(encoded: view.encoded)
                owner.socket.encoder.rewriteID(ofFrameAt: offset, to: session.clientID)
                markDirty(owner)
            }
            return
        case .sessionList where session.purpose == .adoptionList:
            if header.flags.contains(.end) {
                agentSessions[header.id] = nil
                if let list = try? SessionList(cbor: view.payload) { adopt(list.sessions) }
            }
            return
        case .attached where session.purpose == .adopted || session.detachable:
            // The agent's answer to the relay's own attach: what the agent lost while nobody
            // read is lost to the next client too.
            if let attached = try? Attached(cbor: view.payload) {
                session.flow.droppedBytes += attached.droppedBytes
                session.pid = attached.pid
                session.tty = attached.tty
            }
            return
        case .detached where session.reattachPending:
            if header.flags.contains(.end) { reattach(session, agentSession: (try? Detached(cbor: view.payload))?.session) }
            return
        default:
            break
        }
        if header.flags.contains(.end) {
            session.agentEnded = true
            agentSessions[header.id] = nil
            session.agentID = nil
        }
        if session.purpose == .adoptionList { return }
        if session.abandoned {
            if session.agentEnded { removeSession(session) }
            return
        }
        deliver(view, session: session)
        if session.agentEnded && session.owner == nil { agentEndedUnattended(session) }
    }

    private func handleAgentControl(_ view: FrameView, link: AgentLink) {
        switch view.header.kind {
        case .hello:
            guard link.hello == nil else { return }
            do { agentHelloArrived(try Hello(cbor: view.payload), link: link) } catch {
                sendToAgent(id: 0, ErrorMessage(code: .badPayload, message: "hello: \(error.description)"))
                dropAgent(reason: "undecodable hello: \(error.description)")
            }
        case .pong:
            guard let pong = try? Pong(cbor: view.payload), let ping = pings.removeValue(forKey: pong.nonce) else { return }
            if let client = ping.client { send(client, id: 0, Pong(nonce: ping.clientNonce)) }
        case .ping:
            if let ping = try? Ping(cbor: view.payload) { sendToAgent(id: 0, Pong(nonce: ping.nonce)) }
        case .error:
            let error = try? ErrorMessage(cbor: view.payload)
            diagnose("agent error: \(error.map { "\($0.code): \($0.message)" } ?? "(undecodable)")")
        default:
            break
        }
    }

    /// stdout/stderr from the agent: straight through when the client has window and nothing
    /// is queued before it, else queued (and, with nobody attached, kept as replay).
    private func agentData(_ view: FrameView, session: RelaySession) {
        let count = view.header.payloadCount
        session.flow.receivedFromAgent(count)
        if session.isListed {
            record(session.number, .data(view.header.kind == .stdout ? .stdout : .stderr, Array(view.payload)))
        }
        if session.abandoned {
            grantAgent(session)
            return
        }
        if let owner = session.owner, session.flow.pending.isEmpty, session.flow.clientCredit >= Int64(count) {
            let offset = owner.socket.encoder.pendingBytes
            owner.socket.encoder.append(encoded: view.encoded)
            owner.socket.encoder.rewriteID(ofFrameAt: offset, to: session.clientID)
            session.flow.sentToClient(count)
            markDirty(owner)
            return
        }
        session.flow.pending.append(kind: view.header.kind, flags: view.header.flags, payload: view.payload)
        // Nobody attached: keep the newest replayBytes. Attached: the agent keeps to the
        // window, so this bound is reached only by an agent that does not.
        let limit = configuration.replayBytes + (session.owner == nil ? 0 : 2 * Int(OutputFlow.window))
        let dropped = session.flow.pending.trimData(toAtMost: limit)
        if dropped > 0 { session.flow.droppedBytes += UInt64(dropped) }
        if session.owner != nil { flushSession(session) } else { grantAgent(session) }
    }

    /// A non-data frame for the session's client, in order behind anything queued.
    private func deliver(_ view: FrameView, session: RelaySession) {
        if let owner = session.owner, session.flow.pending.isEmpty {
            let offset = owner.socket.encoder.pendingBytes
            owner.socket.encoder.append(encoded: view.encoded)
            owner.socket.encoder.rewriteID(ofFrameAt: offset, to: session.clientID)
            markDirty(owner)
            if view.header.flags.contains(.end) { endedToClient(session) }
            return
        }
        session.flow.pending.append(kind: view.header.kind, flags: view.header.flags, payload: view.payload)
        if session.owner != nil { flushSession(session) }
    }

    /// The agent ended a session nobody is attached to.
    private func agentEndedUnattended(_ session: RelaySession) {
        guard session.detachable, session.isListed else {
            removeSession(session)
            return
        }
        // Kept, with its output and exit, for a later attach; the oldest beyond the bound go.
        finishedDetached.append(session.number)
        while finishedDetached.count > configuration.maxFinishedDetached {
            let number = finishedDetached.removeFirst()
            if let old = sessionsByNumber[number], old.agentEnded, old.owner == nil { removeSession(old) }
        }
    }

    // MARK: adoption

    private func requestAdoptionList() {
        let id = allocateID()
        let session = RelaySession(purpose: .adoptionList, number: 0, agentID: id)
        agentSessions[id] = session
        sendToAgent(id: id, flags: .start, ListSessions())
    }

    /// Takes over the agent's detached sessions nobody watches: attach to each on a new id,
    /// keeping the agent's number as the relay's when it is free.
    private func adopt(_ sessions: [SessionInfo]) {
        for info in sessions where info.detached && !info.attached {
            let id = allocateID(preferring: info.session)
            let session = RelaySession(purpose: .adopted, number: id, agentID: id)
            session.argv = info.argv
            session.pid = info.pid
            session.tty = info.tty
            session.startedNs = info.startedNs
            session.exited = info.exited
            session.detachable = true
            agentSessions[id] = session
            sessionsByNumber[id] = session
            sendToAgent(id: id, flags: .start, Attach(session: info.session, replay: true))
            record(id, .relay("adopted", detail: "agent session \(info.session), pid \(info.pid)"))
        }
        if !sessions.isEmpty { diagnose("agent has \(sessions.count) session(s); adopted the detached ones") }
    }

    /// The agent let go of a session the relay detached (`detached` END): attach to it again
    /// on a new id so the relay holds its output, as for a session started detached.
    private func reattach(_ session: RelaySession, agentSession: UInt32?) {
        if let old = session.agentID { agentSessions[old] = nil }
        session.reattachPending = false
        guard let agentSession else {
            session.agentID = nil
            session.agentEnded = true
            agentEndedUnattended(session)
            return
        }
        let id = allocateID()
        session.agentID = id
        session.flow.resetAgent()
        agentSessions[id] = session
        sendToAgent(id: id, flags: .start, Attach(session: agentSession, replay: true))
    }

    // MARK: losing the agent

    /// The connection is gone: every session ends with `agentGone`, then reconnect.
    func dropAgent(reason: String) {
        guard agent != nil else { return }
        let wasReady = state == .ready
        closeAgentSocket()
        state = .connecting
        unresponsive = false
        if !wasReady {
            lastConnectError = reason
            retryConnecting()
            return
        }
        diagnose("lost the agent: \(reason)")
        record(0, .relay("agentGone", detail: reason))
        let message = "the connection to the agent dropped (\(reason)); the session's fate is unknown"
        var ended: [RelaySession] = Array(agentSessions.values)
        for session in sessionsByNumber.values where !ended.contains(where: { $0 === session }) { ended.append(session) }
        for session in ended where session.purpose != .logs {
            if session.isListed { record(session.number, .error(code: ErrorCode.agentGone.rawValue, message: message)) }
            if let owner = session.owner {
                owner.sessions[session.clientID] = nil
                sendError(owner, id: session.clientID, .agentGone, message)
            }
            session.owner = nil
        }
        agentSessions.removeAll()
        sessionsByNumber.removeAll()
        finishedDetached.removeAll()
        for ping in pings.values {
            if let client = ping.client { sendError(client, id: 0, .agentGone, message) }
        }
        pings.removeAll()
        if stopping { return }
        connectDeadlineNs = Clock.monotonicNs() + nanoseconds(configuration.agentTimeout)
        diagnose("reconnecting to \(configuration.agent) for up to \(configuration.agentTimeout)")
        launchConnector()
    }
}

func nanoseconds(_ duration: Duration) -> UInt64 {
    let (seconds, attoseconds) = duration.components
    return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
}
