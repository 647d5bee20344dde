#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// What the agent link reports to the relay's router.
protocol AgentChannelDelegate: AnyObject {
    /// The agent said hello; `first`: the first time since the relay started.
    func agentReady(_ hello: Hello, first: Bool)
    /// A frame on a session id (the view is valid only during the call).
    func agentSessionFrame(_ view: FrameView)
    /// The connection that had said hello dropped: every session on it is gone. `waiting`:
    /// the clients whose pings will get no pong.
    func agentLost(message: String, waiting: [ClientLink])
    /// No frame from the agent for `unresponsiveAfter`.
    func agentUnresponsive(_ message: String)
    func agentPonged(_ client: ClientLink, nonce: UInt64)
    /// The agent's queue crossed its high-water mark (true) or fell below its low one.
    func agentBackpressure(_ on: Bool)
    /// The relay cannot go on: the agent is unreachable or incompatible.
    func agentFailed(_ error: RelayError)
}

/// The connection to the agent: connecting (with retries until its hello arrives),
/// reconnecting when it drops, liveness (pings, `agentUnresponsive`), the control channel
/// (id 0), and writing with backpressure. Frames on session ids go to the delegate.
///
/// Owns the `AgentLink` (its socket) and the `AgentConnector` thread while one runs.
/// Touched only by the relay's loop thread, except `connectorReported`, which the relay calls
/// from its inbox.
final class AgentChannel {
    enum State {
        /// A connector thread is trying (`connector`), or a retry is scheduled (nil).
        case connecting(AgentConnector?)
        /// Connected; the agent's hello has not arrived yet.
        case greeting(AgentLink)
        case ready(AgentLink)
    }

    private let configuration: RelayConfiguration
    private let loop: EventLoop
    private let log: ExecLog?
    private let postOutcome: @Sendable (AgentConnector.Outcome) -> Void
    weak var delegate: AgentChannelDelegate?
    private(set) var state = State.connecting(nil)
    /// The last agent hello (kept while reconnecting, for the hello to clients).
    private(set) var lastHello: Hello?
    private var attempts = ConnectAttempts()
    private(set) var unresponsive = false
    private var backpressure = false
    private var pings = PingTable()
    /// The relay is stopping: nothing is (re)connected any more.
    var stopping = false

    /// Agent-bound bytes above which the relay stops reading clients, and below which it
    /// starts again. Clients only add control frames and stdin (itself windowed), so this is
    /// reached only when the agent stops reading.
    static let highWater = 8 << 20
    static let lowWater = 2 << 20

    init(configuration: RelayConfiguration, loop: EventLoop, log: ExecLog?,
         postOutcome: @escaping @Sendable (AgentConnector.Outcome) -> Void) {
        self.configuration = configuration
        self.loop = loop
        self.log = log
        self.postOutcome = postOutcome
    }

    var link: AgentLink? {
        switch state {
        case .greeting(let link), .ready(let link): link
        case .connecting: nil
        }
    }

    var isReady: Bool {
        if case .ready = state { return true }
        return false
    }

    private func diagnose(_ line: String) { configuration.diagnostics(line) }

    // MARK: connecting

    func startConnecting() {
        attempts.deadlineNs = Clock.monotonicNs() + configuration.agentTimeout.nanoseconds
        launchConnector()
    }

    private func launchConnector() {
        if case .fd(let number) = configuration.agent, attempts.inheritedDescriptorTaken {
            // The inherited descriptor was the agent connection and was closed with it; its
            // number may belong to something else by now (a client's socket), which adopting
            // it again would close.
            attempts.lastError = "fd:\(number) was the agent connection and is closed; an inherited descriptor cannot be connected again"
            giveUpConnecting()
            return
        }
        let connector: AgentConnector
        do { connector = try AgentConnector(address: configuration.agent, deadlineNs: attempts.deadlineNs, report: postOutcome) } catch {
            attempts.lastError = "eventfd: \(error)"
            giveUpConnecting()
            return
        }
        state = .connecting(connector)
        connector.start()
    }

    func connectorReported(_ outcome: AgentConnector.Outcome) {
        state = .connecting(nil)
        switch outcome {
        case .connected(let raw):
            guard !stopping else {
                _ = Glibc.close(raw)
                return
            }
            adoptSocket(raw)
        case .failed(let why):
            attempts.lastError = why
            giveUpConnecting()
        }
    }

    private func giveUpConnecting() {
        let seconds = Double(configuration.agentTimeout.nanoseconds) / 1e9
        let error = RelayError.agentUnreachable(address: configuration.agent.description, seconds: seconds, lastError: attempts.lastError)
        diagnose("\(error); stopping")
        log?.record(session: 0, .relay("agentUnreachable", detail: error.description))
        delegate?.agentFailed(error)
    }

    private func adoptSocket(_ raw: CInt) {
        if case .fd = configuration.agent { attempts.inheritedDescriptorTaken = true }
        let link: AgentLink
        do { link = AgentLink(socket: try FrameSocket(adopting: OwnedFD(adopting: raw)), loop: loop) } catch {
            attempts.lastError = "fcntl: \(error)"
            return retryConnecting()
        }
        do {
            try link.watch { [unowned self, weak link] events in
                guard let link, link === self.link else { return }
                linkEvent(link, events: events)
            }
        } catch {
            attempts.lastError = "\(error)"
            return retryConnecting()
        }
        state = .greeting(link)
        // Each side sends hello at once, without waiting for the other's.
        send(id: 0, Hello(role: .relay, name: configuration.name, pid: getpid()))
        link.helloTimer = loop.schedule(after: configuration.helloTimeout) { [unowned self, weak link] in
            guard let link, link === self.link, link.hello == nil else { return }
            closeLink()
            attempts.lastError = "connected, but no hello within \(configuration.helloTimeout)"
            retryConnecting()
        }
    }

    /// Another attempt if the deadline allows, else give up.
    private func retryConnecting() {
        guard !stopping else { return }
        if Clock.monotonicNs() < attempts.deadlineNs {
            // A short pause, so a peer that closes at once does not make this a busy loop.
            loop.schedule(after: .milliseconds(50)) { [unowned self] in
                if !stopping, case .connecting(nil) = state { launchConnector() }
            }
        } else {
            giveUpConnecting()
        }
    }

    private func closeLink() {
        guard let link else { return }
        if let timer = link.helloTimer { loop.cancel(timer) }
        if let failure = link.close() { diagnose("unwatching the agent connection: \(failure)") }
        state = .connecting(nil)
    }

    /// Stops connecting and closes the connection, after writing what the socket takes now.
    func stop() {
        stopping = true
        switch state {
        case .connecting(let connector?): connector.cancel()
        case .connecting(nil): break
        case .greeting(let link), .ready(let link):
            _ = try? link.socket.flush()  // best effort: the agent learns of the close either way
            if let failure = link.close() { diagnose("unwatching the agent connection: \(failure)") }
            state = .connecting(nil)
        }
    }

    private func helloArrived(_ hello: Hello, link: AgentLink) {
        if let timer = link.helloTimer { loop.cancel(timer) }
        link.helloTimer = nil
        guard hello.version >= 1 else {
            send(id: 0, RelayRefusal(.unsupported, "this relay speaks protocol version \(protocolVersion)").message)
            flush()
            closeLink()
            delegate?.agentFailed(.agentIncompatible("it speaks protocol version \(hello.version), the relay \(protocolVersion)"))
            return
        }
        link.hello = hello
        let first = lastHello == nil
        lastHello = hello
        state = .ready(link)
        unresponsive = false
        link.lastHeardNs = Clock.monotonicNs()
        let detail = "\(hello.name) pid \(hello.pid) version \(hello.agentVersion ?? "?") via \(configuration.agent)"
        diagnose((first ? "connected to agent " : "reconnected to agent ") + detail)
        log?.record(session: 0, .relay("agentConnected", detail: detail))
        if first { scheduleLiveness() }
        delegate?.agentReady(hello, first: first)
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
        guard case .ready(let link) = state else { return }
        send(id: 0, Ping(nonce: pings.add(client: nil, nonce: 0)))
        let silentNs = Clock.monotonicNs() - link.lastHeardNs
        if !unresponsive && silentNs > configuration.unresponsiveAfter.nanoseconds {
            unresponsive = true
            let message = "no frame from the agent for \(silentNs / 1_000_000) ms (limit \(configuration.unresponsiveAfter))"
            diagnose("agent unresponsive: \(message)")
            log?.record(session: 0, .relay("agentUnresponsive", detail: message))
            delegate?.agentUnresponsive(message)
            // Pings from clients would wait for ever: the id-0 error answers them.
            pings.dropClients()
        }
    }

    /// A client's ping goes to the agent, so the round trip covers the whole path.
    func forwardPing(_ ping: Ping, from client: ClientLink) throws(RelayRefusal) {
        if unresponsive { throw RelayRefusal(.agentUnresponsive, "the agent has not answered for a while") }
        guard isReady else { throw RelayRefusal(.agentNotReady, "the relay is connecting to its agent") }
        send(id: 0, Ping(nonce: pings.add(client: client, nonce: ping.nonce)))
    }

    /// Why a new session cannot go to the agent right now, if it cannot.
    func refusalForNewSession() -> RelayRefusal? {
        if !isReady { return RelayRefusal(.agentNotReady, "the relay is connecting to its agent; try again") }
        if unresponsive { return RelayRefusal(.agentUnresponsive, "the agent has not answered for over \(configuration.unresponsiveAfter)") }
        return nil
    }

    // MARK: writing

    /// Queues a frame to the agent (flushed after this batch of events); dropped when there is
    /// no connection.
    func send<M: Message>(id: UInt32, flags: FrameFlags = [], _ message: M) {
        guard let link else { return }
        link.socket.encoder.append(id: id, flags: flags, message)
        scheduleFlush()
    }

    /// Queues an already encoded frame to the agent with its id rewritten.
    func forward(_ encoded: UnsafeRawBufferPointer, id: UInt32) {
        guard let link else { return }
        let offset = link.socket.encoder.pendingBytes
        link.socket.encoder.append(encoded: encoded)
        link.socket.encoder.rewriteID(ofFrameAt: offset, to: id)
        scheduleFlush()
    }

    private var flushScheduled = false

    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        loop.soon { [unowned self] in
            flushScheduled = false
            flush()
        }
    }

    func flush() {
        guard let link else { return }
        do { try link.flush() } catch {
            return drop(reason: error.description)
        }
        let pending = link.socket.encoder.pendingBytes
        if !backpressure && pending > Self.highWater {
            backpressure = true
            delegate?.agentBackpressure(true)
        } else if backpressure && pending < Self.lowWater {
            backpressure = false
            delegate?.agentBackpressure(false)
        }
    }

    // MARK: reading

    private func linkEvent(_ link: AgentLink, events: UInt32) {
        if events & EventLoop.writable != 0 { flush() }
        guard self.link === link,
              events & (EventLoop.readable | EventLoop.peerClosed | EventLoop.hangUp | EventLoop.error) != 0 else { return }
        let outcome = link.socket.read(chunk: 256 << 10, limit: 4 << 20)
        do {
            _ = try link.handleFrames { view in
                handleFrame(view, link: link)
                return self.link === link
            }
        } catch {
            send(id: 0, RelayRefusal(.framing, error.description).message)
            flush()
            return drop(reason: "framing error from the agent: \(error.description)")
        }
        guard self.link === link else { return }
        if outcome.closed {
            drop(reason: outcome.failure.map { "read failed: \($0)" } ?? "the agent closed the connection")
        } else if outcome.bytes >= 4 << 20 {
            loop.soon { [unowned self, weak link] in
                if let link, link === self.link { linkEvent(link, events: EventLoop.readable) }
            }
        }
        link.socket.decoder.releaseStorageIfIdle()
    }

    private func handleFrame(_ view: FrameView, link: AgentLink) {
        link.lastHeardNs = Clock.monotonicNs()
        if unresponsive {
            unresponsive = false
            diagnose("agent responsive again")
            log?.record(session: 0, .relay("agentResponsive", detail: ""))
        }
        guard view.header.id == 0 else {
            if link.hello != nil { delegate?.agentSessionFrame(view) }  // before hello: dropped
            return
        }
        switch view.header.kind {
        case .hello:
            guard link.hello == nil else { return }
            do { helloArrived(try Hello(cbor: view.payload), link: link) } catch {
                send(id: 0, RelayRefusal(.badPayload, "hello: \(error.description)").message)
                drop(reason: "undecodable hello: \(error.description)")
            }
        case .pong:
            guard let pong = try? Pong(cbor: view.payload), let ping = pings.remove(pong.nonce) else { return }
            if let client = ping.client { delegate?.agentPonged(client, nonce: ping.clientNonce) }
        case .ping:
            if let ping = try? Ping(cbor: view.payload) { send(id: 0, Pong(nonce: ping.nonce)) }
        case .error:
            let error = try? ErrorMessage(cbor: view.payload)
            diagnose("agent error: \(error.map { "\($0.code): \($0.message)" } ?? "(undecodable)")")
        default:
            break
        }
    }

    // MARK: losing the agent

    /// The connection is gone: the delegate ends every session, then the relay reconnects.
    func drop(reason: String) {
        guard link != nil else { return }
        let wasReady = isReady
        closeLink()
        unresponsive = false
        if !wasReady {
            attempts.lastError = reason
            return retryConnecting()
        }
        diagnose("lost the agent: \(reason)")
        log?.record(session: 0, .relay("agentGone", detail: reason))
        let message = "the connection to the agent dropped (\(reason)); the session's fate is unknown"
        delegate?.agentLost(message: message, waiting: pings.removeAll())
        if stopping { return }
        attempts.deadlineNs = Clock.monotonicNs() + configuration.agentTimeout.nanoseconds
        diagnose("reconnecting to \(configuration.agent) for up to \(configuration.agentTimeout)")
        launchConnector()
    }
}

/// Where connecting to the agent stands, across attempts.
struct ConnectAttempts {
    /// Until when (monotonic ns) the current round of attempts may go on.
    var deadlineNs: UInt64 = 0
    /// What the last attempt saw, for the error when the deadline passes.
    var lastError = "not tried"
    /// `--agent fd:N`: the inherited descriptor was taken; it cannot be connected again.
    var inheritedDescriptorTaken = false
}
