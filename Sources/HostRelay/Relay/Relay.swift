#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization
import TetherPosix
import TetherProtocol

/// The relay: owns the one connection to an agent and serves any number of clients on a unix
/// socket with the same frames (DESIGN.md "Relay and host tooling").
///
/// - Routing: a client picks its own session ids; the relay gives each session an id on the
///   agent connection and rewrites the 4 id bytes of every frame in place, both ways. Data
///   frames are never decoded.
/// - Flow control: per session, end to end (`OutputFlow`): the relay acks the agent as the
///   client acks it, and always keeps reading the agent, so a slow client holds only its own
///   sessions. Each client has its own output queue; nothing is shared between clients.
/// - A client that goes away gets its sessions killed, except detached ones (`exec` with
///   `detach`, or a `detach` request): those stay with the relay, which keeps reading them
///   into a bounded replay buffer for the next `attach`.
/// - When the agent connection drops, every open session ends with `error{agentGone}` END,
///   and the relay reconnects within `agentTimeout`; if that fails it stops (`run()` returns).
///   On every (re)connect it lists the agent's sessions and adopts the detached ones.
/// - Liveness: pings every `pingInterval`; after `unresponsiveAfter` of silence clients get
///   `error{agentUnresponsive}` on id 0 and new requests get it with END, until the agent
///   speaks again.
///
/// Threads: everything runs on the thread that calls `run()` (one epoll loop). `stop()` may
/// be called from any thread. The exec.log writer, the `logs` readers and the agent
/// connector have their own threads and talk to the loop through `inbox` and the waker.
public final class Relay: @unchecked Sendable {
    let configuration: RelayConfiguration
    let loop: EventLoop
    private let inbox = Mutex<[InboxItem]>([])
    private let waker: EventLoop.Waker

    enum InboxItem: Sendable {
        case agent(AgentConnector.Outcome)
        case logOutput(key: UInt64, LogFollower.Output)
        case stop
    }

    enum AgentState { case connecting, ready }

    // Loop-thread state.
    var state = AgentState.connecting
    var agent: AgentLink?
    /// The last agent hello (kept while reconnecting, for the hello to clients).
    var agentHello: Hello?
    var everConnected = false
    var connectDeadlineNs: UInt64 = 0
    var connector: AgentConnector?
    var lastConnectError = "not tried"
    /// `--agent fd:N`: the inherited descriptor was taken; it cannot be connected again.
    var adoptedInheritedAgent = false
    var unresponsive = false
    var failure: RelayError?
    var stopping = false

    /// The listening socket, -1 until the agent first answered.
    var listener: CInt = -1
    /// The spare descriptor, the listener's rests and the refusals to report (Relay+Accept).
    let admission = ClientAdmission()
    /// RLIMIT_NOFILE's soft limit once `run()` raised it; nil when unlimited or unknown.
    var descriptorLimit: UInt64?
    var clients: [CInt: ClientLink] = [:]
    var clientSerial: UInt64 = 0
    var dirtyClients: [ClientLink] = []
    /// Clients with more frames than a turn, served round robin after each pass of the loop.
    private var busyClients: [ClientLink] = []
    private var busyServiceScheduled = false
    var flushScheduled = false
    var agentBackpressure = false

    var agentSessions: [UInt32: RelaySession] = [:]
    var sessionsByNumber: [UInt32: RelaySession] = [:]
    var nextID: UInt32 = 1
    var logSessions: [UInt64: RelaySession] = [:]
    var nextLogKey: UInt64 = 1
    /// Finished detached sessions waiting for an attach, oldest first (bounded).
    var finishedDetached: [UInt32] = []

    struct PendingPing {
        weak var client: ClientLink?
        var clientNonce: UInt64
    }
    var pings: [UInt64: PendingPing] = [:]
    var nextNonce: UInt64 = 1

    let log: ExecLog?

    /// Agent-bound bytes above which the relay stops reading clients, and below which it
    /// starts again. Clients only add control frames and stdin (itself windowed), so this is
    /// reached only when the agent stops reading.
    static let agentHighWater = 8 << 20
    static let agentLowWater = 2 << 20
    /// A client's unread output past which the relay stops reading from it, and where it
    /// starts again. Session output alone stays far below: each session's window is 256 KiB.
    static let clientHighWater = 16 << 20
    static let clientLowWater = 4 << 20
    /// One client's turn: at most this many frames handled and bytes read before the other
    /// ready descriptors get theirs. A budget in bytes alone is not enough: 1 MiB of 10-byte
    /// garbage frames kept everybody else waiting for tens of milliseconds.
    static let framesPerTurn = 64
    static let bytesPerTurn = 256 << 10
    /// Frames handled for all busy clients together per pass of the loop, so that a hundred
    /// flooding connections cost the others no more than one does.
    static let busyFramesPerPass = 256
    /// Below this many bytes read in a turn a client counts as quiet (see `clientTurn`).
    static let quietReadBytes = 16 << 10

    public init(_ configuration: RelayConfiguration) throws(RelayError) {
        self.configuration = configuration
        do { loop = try EventLoop() } catch { throw .setup("epoll: \(error)") }
        waker = loop.waker
        if let logConfiguration = configuration.log {
            do { log = try ExecLog(logConfiguration, diagnostics: configuration.diagnostics) } catch {
                throw .log(path: logConfiguration.path, error)
            }
        } else {
            log = nil
        }
    }

    /// Asks a running relay to stop (any thread): clients and the agent connection are closed
    /// (the agent then kills the non-detached sessions), exec.log is written out.
    public func stop() { post(.stop) }

    func post(_ item: InboxItem) {
        inbox.withLock { $0.append(item) }
        waker.wake()
    }

    /// Connects to the agent, then serves until `stop()` or until the agent cannot be reached
    /// again within `agentTimeout`. Blocks the calling thread.
    public func run() throws(RelayError) {
        raiseDescriptorLimit()
        log?.start()
        defer { log?.close() }
        record(0, .relay("relayStarted", detail: "agent \(configuration.agent), listening on \(configuration.listen)"))
        loop.onWake { [unowned self] in drainInbox() }
        startConnecting()
        do { try loop.run() } catch { failure = failure ?? .setup("epoll_wait: \(error)") }
        shutDown()
        if let failure { throw failure }
    }

    private func drainInbox() {
        let items = inbox.withLock { items in
            let taken = items
            items.removeAll()
            return taken
        }
        for item in items {
            switch item {
            case .agent(let outcome): connectorReported(outcome)
            case .logOutput(let key, let output): logOutput(key: key, output)
            case .stop: beginStop()
            }
        }
    }

    func beginStop() {
        guard !stopping else { return }
        stopping = true
        loop.stopping = true
    }

    /// Closes everything; runs once after the loop ends.
    private func shutDown() {
        stopping = true
        connector?.cancel()
        for session in logSessions.values { session.follower?.cancel() }
        for client in Array(clients.values) {
            // What is queued for it (the agentGone errors that led here, say) goes out first,
            // as far as its socket takes it without waiting.
            flush(client)
            close(client: client, reason: "relay stopping")
        }
        if let agent {
            _ = try? agent.socket.flush()
            loop.unwatch(agent.fd)
            agent.socket.close()
            self.agent = nil
        }
        if listener >= 0 {
            loop.unwatch(listener)
            _ = Glibc.close(listener)
            listener = -1
            if case .unix(let path) = configuration.listen { unlink(path) }
        }
        admission.closeSpare()
        reportRefusals()
        record(0, .relay("relayStopped", detail: failure.map { "\($0)" } ?? ""))
    }

    func diagnose(_ line: String) { configuration.diagnostics(line) }

    /// An exec-log entry; built only when there is a log (`.data` entries copy their payload).
    func record(_ session: UInt32, _ event: @autoclosure () -> LogEvent) {
        guard let log else { return }
        log.record(session: session, event())
    }

    /// Every client costs a descriptor: the soft limit goes up to the hard one, so that
    /// `maxClients`, not a soft limit of 1,024 inherited from a login shell, is what bounds
    /// clients. Past the limit `Relay+Accept` refuses clients without spinning.
    private func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(CInt(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        descriptorLimit = limit.rlim_cur == rlim_t.max ? nil : UInt64(limit.rlim_cur)
    }

    // MARK: listening

    /// Opens the client socket (once, after the first agent hello) and runs the setup hook.
    func startListening() {
        do {
            let fd = try Socket.listen(configuration.listen, backlog: 1024)
            if case .fd = configuration.listen { try? FileIO.setNonBlocking(fd.raw) }
            let raw = fd.release()
            listener = raw
            admission.openSpare()
            try watchListener()
        } catch let error as SocketError {
            fail(.listen(error))
            return
        } catch {
            fail(.setup("watching the listener: \(error)"))
            return
        }
        if let hook = configuration.afterSetup {
            do { try hook() } catch {
                fail(.setup("\(error)"))
                return
            }
        }
        warnIfDescriptorLimitBelowCap()
        diagnose("serving clients on \(configuration.listen)")
    }

    func fail(_ error: RelayError) {
        failure = failure ?? error
        beginStop()
    }

    func relayHello() -> Hello {
        Hello(role: .relay, name: configuration.name, pid: getpid(), capabilities: (agentHello?.capabilities ?? []) + ["relay/1"],
              agentVersion: agentHello?.agentVersion, bootNs: agentHello?.bootNs, readyNs: agentHello?.readyNs)
    }

    // MARK: writing

    func markDirty(_ client: ClientLink) {
        guard !client.closed else { return }
        dirtyClients.append(client)
        scheduleFlush()
    }

    func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        loop.soon { [unowned self] in flushAll() }
    }

    private func flushAll() {
        flushScheduled = false
        let dirty = dirtyClients
        dirtyClients.removeAll(keepingCapacity: true)
        for client in dirty where !client.closed { flush(client) }
        flushAgent()
    }

    func flush(_ client: ClientLink) {
        let drained: Bool
        do { drained = try client.socket.flush() } catch {
            close(client: client, reason: "write failed: \(error)")
            return
        }
        if drained == client.wantsWrite {
            client.wantsWrite = !drained
            updateEvents(client)
        }
        if client.pausedForBacklog && client.socket.encoder.pendingBytes < Self.clientLowWater {
            resumeInput(client, forAgent: false)
        }
    }

    func updateEvents(_ client: ClientLink) {
        var events: UInt32 = client.wantsWrite ? EventLoop.writable : 0
        if !client.inputPaused && !client.busy { events |= EventLoop.readable | EventLoop.peerClosed }
        try? loop.modify(client.fd, events: events)
    }

    func flushAgent() {
        guard let agent else { return }
        let drained: Bool
        do { drained = try agent.socket.flush() } catch {
            dropAgent(reason: "write failed: \(error)")
            return
        }
        if drained == agent.wantsWrite {
            agent.wantsWrite = !drained
            try? loop.modify(agent.fd, events: EventLoop.readable | EventLoop.peerClosed | (drained ? 0 : EventLoop.writable))
        }
        let pending = agent.socket.encoder.pendingBytes
        if !agentBackpressure && pending > Self.agentHighWater {
            agentBackpressure = true
            for client in clients.values { pauseInput(client, forAgent: true) }
        } else if agentBackpressure && pending < Self.agentLowWater {
            agentBackpressure = false
            for client in clients.values where client.pausedForAgent { resumeInput(client, forAgent: true) }
        }
    }

    func pauseInput(_ client: ClientLink, forAgent: Bool) {
        let wasPaused = client.inputPaused
        if forAgent { client.pausedForAgent = true } else { client.pausedForBacklog = true }
        if !wasPaused { updateEvents(client) }
    }

    private func resumeInput(_ client: ClientLink, forAgent: Bool) {
        if forAgent { client.pausedForAgent = false } else { client.pausedForBacklog = false }
        guard !client.inputPaused else { return }
        // Frames already read into the decoder raise no readiness of their own.
        makeBusy(client)
    }

    /// Queues a frame to the agent (flushed after this batch of events).
    func sendToAgent<M: Message>(id: UInt32, flags: FrameFlags = [], _ message: M) {
        guard let agent else { return }
        agent.socket.encoder.append(id: id, flags: flags, message)
        scheduleFlush()
    }

    /// Queues an already encoded frame to the agent with its id rewritten.
    func forwardToAgent(_ encoded: UnsafeRawBufferPointer, id: UInt32) {
        guard let agent else { return }
        let offset = agent.socket.encoder.pendingBytes
        agent.socket.encoder.append(encoded: encoded)
        agent.socket.encoder.rewriteID(ofFrameAt: offset, to: id)
        scheduleFlush()
    }

    func send<M: Message>(_ client: ClientLink, id: UInt32, flags: FrameFlags = [], _ message: M) {
        guard !client.closed else { return }
        client.socket.encoder.append(id: id, flags: flags, message)
        markDirty(client)
    }

    /// An `error` frame; with a session id it carries END, as DESIGN.md says.
    func sendError(_ client: ClientLink, id: UInt32, _ code: ErrorCode, _ message: String, errno: Int32? = nil) {
        send(client, id: id, flags: id == 0 ? [] : .end, ErrorMessage(code: code, message: message, errno: errno))
    }

    // MARK: ids

    /// An id free both as a session number and as an agent id; `preferred` when it is free.
    func allocateID(preferring preferred: UInt32? = nil) -> UInt32 {
        if let preferred, preferred != 0, sessionsByNumber[preferred] == nil, agentSessions[preferred] == nil {
            if preferred >= nextID { nextID = preferred == .max ? 1 : preferred + 1 }
            return preferred
        }
        while true {
            let id = nextID
            nextID = nextID == .max ? 1 : nextID + 1
            // Monotonic, so an id comes back only after 2^32 sessions, long after any frame
            // for its previous use could still be in flight.
            if sessionsByNumber[id] == nil && agentSessions[id] == nil { return id }
        }
    }

    // MARK: clients

    func clientEvent(_ client: ClientLink, events: UInt32) {
        if events & EventLoop.writable != 0 { flush(client) }
        guard !client.closed, !client.inputPaused, !client.busy,
              events & (EventLoop.readable | EventLoop.peerClosed | EventLoop.hangUp | EventLoop.error) != 0 else { return }
        if clientTurn(client).moreWaiting { makeBusy(client) }
    }

    /// Handles up to a turn's frames of a client, reading its socket once what was read before
    /// is handled (so the decoder never holds more than a turn's bytes). `moreWaiting`: frames
    /// are left in the decoder, or a hang-up is not handled yet; neither raises readiness.
    private func clientTurn(_ client: ClientLink) -> (moreWaiting: Bool, frames: Int) {
        var budget = Self.framesPerTurn
        guard handleBufferedFrames(client, budget: &budget) else { return (false, Self.framesPerTurn - budget) }
        if budget == 0 { return (true, Self.framesPerTurn) }
        let outcome = client.socket.read(chunk: 64 << 10, limit: Self.bytesPerTurn)
        guard handleBufferedFrames(client, budget: &budget) else { return (false, Self.framesPerTurn - budget) }
        let frames = Self.framesPerTurn - budget
        if outcome.closed && budget > 0 {
            close(client: client, reason: outcome.failure.map { "read failed: \($0)" } ?? "disconnected")
            return (false, frames)
        }
        if client.socket.decoder.bufferedBytes == 0 && outcome.bytes < Self.quietReadBytes {
            // A quiet client (requests, acks, typed keys) holds no read buffer between turns:
            // each read reserves a 64 KiB chunk, and thousands of idle clients that once sent
            // a hello would otherwise pin 64 KiB each. Streaming clients keep theirs.
            client.socket.decoder = FrameDecoder()
        } else {
            client.socket.decoder.releaseStorageIfIdle()
        }
        if client.socket.encoder.pendingBytes > Self.clientHighWater {
            pauseInput(client, forAgent: false)
            return (false, frames)
        }
        // Bytes left in the socket need no queue: the descriptor is level-triggered.
        return (budget == 0 || outcome.closed, frames)
    }

    /// Puts a client in the queue of busy clients, served after each pass of the loop.
    private func makeBusy(_ client: ClientLink) {
        guard !client.busy, !client.closed else { return }
        client.busy = true
        updateEvents(client)
        busyClients.append(client)
        scheduleBusyService()
    }

    private func scheduleBusyService() {
        guard !busyServiceScheduled else { return }
        busyServiceScheduled = true
        loop.afterReadyEvents { [unowned self] in serveBusyClients() }
    }

    /// One pass over the busy clients, round robin, within `busyFramesPerPass`; those with more
    /// go back to the end of the queue for the next pass, after everyone else's events.
    private func serveBusyClients() {
        busyServiceScheduled = false
        var spent = 0
        var turns = busyClients.count
        while spent < Self.busyFramesPerPass && turns > 0 && !busyClients.isEmpty {
            turns -= 1
            let client = busyClients.removeFirst()
            var more = false
            if !client.closed && !client.inputPaused {
                let turn = clientTurn(client)
                spent += max(turn.frames, 1)
                more = turn.moreWaiting && !client.closed && !client.inputPaused
            }
            if more {
                busyClients.append(client)
            } else {
                client.busy = false
                if !client.closed { updateEvents(client) }
            }
        }
        if !busyClients.isEmpty { scheduleBusyService() }
    }

    /// Handles frames the decoder holds until it runs dry or the budget is spent. False when
    /// the client was closed (a framing error, or a frame that ended it).
    private func handleBufferedFrames(_ client: ClientLink, budget: inout Int) -> Bool {
        while !client.closed && budget > 0 {
            do {
                let handled: Void? = try client.socket.decoder.nextView { view in handleClientFrame(view, from: client) }
                if handled == nil { break }
                budget -= 1
            } catch {
                sendError(client, id: 0, .framing, error.description)
                flush(client)
                close(client: client, reason: "framing error: \(error.description)")
                return false
            }
        }
        return !client.closed
    }

    /// Closes a client: kills its sessions unless they are detached.
    func close(client: ClientLink, reason: String) {
        guard !client.closed else { return }
        client.closed = true
        loop.unwatch(client.fd)
        clients[client.fd] = nil
        client.socket.close()
        for session in client.sessions.values { clientLeft(session, reason: reason) }
        client.sessions.removeAll()
    }
}
