#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization
import TetherPosix
import TetherProtocol

/// The relay: owns the one connection to an agent and serves any number of clients on a unix
/// socket with the same frames. It is a router between parts that each live in their own
/// files and never call one another's owner:
///
/// - `ClientLinks`: every client connection (fair turns, writing, pausing input).
/// - `AgentChannel`: the agent connection (connecting, liveness, the control channel).
/// - `ExecSessions`: the exec sessions, the one subsystem today, holding its `SessionTable`
///   of `RelaySession`s (each with its state as one enum).
/// - Routing, here: one dispatch table per side (`Relay+ClientRoutes`, `Relay+AgentRoutes`)
///   from a frame's channel and kind to what handles it; a handler that refuses throws a
///   `RelayRefusal`, which becomes an `error` frame in one place (`ClientLinks.refuse`).
///   Taking clients in is `Relay+Accept` (with `ClientAdmission`).
///
/// What it does:
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
    let log: ExecLog?

    enum InboxItem: Sendable {
        case agent(AgentConnector.Outcome)
        case logOutput(key: UInt64, LogFollower.Output)
        case stop
    }

    // Loop-thread state.
    let clients: ClientLinks
    let agent: AgentChannel
    /// The exec sessions.
    let exec: ExecSessions
    /// Exposed ports and their tunnels (Ports/).
    let ports: PortForwards
    /// The spare descriptor, the listener's rests and the refusals to report (Relay+Accept).
    let admission = ClientAdmission()
    /// The listening socket, -1 until the agent first answered.
    var listener: CInt = -1
    /// RLIMIT_NOFILE's soft limit once `run()` raised it; nil when unlimited or unknown.
    var descriptorLimit: UInt64?
    var failure: RelayError?
    var stopping = false

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
        // The connector's thread and the `logs` readers post to the inbox; they hold the
        // relay weakly, so a relay that is gone gets nothing (and a connection made for it
        // is closed).
        let relay = WeakRelay()
        clients = ClientLinks(loop: loop, diagnostics: configuration.diagnostics)
        agent = AgentChannel(configuration: configuration, loop: loop, log: log) { outcome in
            guard let relay = relay.value else {
                if case .connected(let fd) = outcome { _ = Glibc.close(fd) }
                return
            }
            relay.post(.agent(outcome))
        }
        exec = ExecSessions(configuration: configuration, log: log, clients: clients, agent: agent) { key, output in
            relay.value?.post(.logOutput(key: key, output))
        }
        ports = PortForwards(loop: loop, tunnel: configuration.tunnel, file: configuration.portsFile.map { PortsFile(path: $0) },
                             clients: clients, diagnose: configuration.diagnostics)
        relay.value = self
        clients.delegate = self
        agent.delegate = self
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
        agent.startConnecting()
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
            case .agent(let outcome): agent.connectorReported(outcome)
            case .logOutput(let key, let output): exec.logOutput(key: key, output)
            case .stop: beginStop()
            }
        }
    }

    func beginStop() {
        guard !stopping else { return }
        stopping = true
        agent.stopping = true
        loop.stopping = true
    }

    /// Closes everything; runs once after the loop ends.
    private func shutDown() {
        beginStop()
        exec.cancelLogReaders()
        ports.closeAll()
        // What is queued for a client (the agentGone errors that led here, say) goes out
        // first, as far as its socket takes it without waiting.
        clients.flushAll()
        for client in Array(clients.all.values) { clients.close(client, reason: "relay stopping") }
        agent.stop()
        if listener >= 0 {
            if let failure = loop.unwatch(listener) { diagnose("unwatching the listener: \(failure)") }
            _ = Glibc.close(listener)
            listener = -1
            if case .unix(let path) = configuration.listen { unlink(path) }
        }
        admission.closeSpare()
        reportRefusals()
        record(0, .relay("relayStopped", detail: failure.map { "\($0)" } ?? ""))
    }

    func diagnose(_ line: String) { configuration.diagnostics(line) }

    func record(_ session: UInt32, _ event: @autoclosure () -> LogEvent) { exec.record(session, event()) }

    func fail(_ error: RelayError) {
        failure = failure ?? error
        beginStop()
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
            return fail(.listen(error))
        } catch {
            return fail(.setup("watching the listener: \(error)"))
        }
        if let hook = configuration.afterSetup {
            do { try hook() } catch {
                return fail(.setup("\(error)"))
            }
        }
        warnIfDescriptorLimitBelowCap()
        diagnose("serving clients on \(configuration.listen)")
    }

    func relayHello() -> Hello {
        let hello = agent.lastHello
        return Hello(role: .relay, name: configuration.name, pid: getpid(), capabilities: (hello?.capabilities ?? []) + ["relay/1"],
                     agentVersion: hello?.agentVersion, bootNs: hello?.bootNs, readyNs: hello?.readyNs)
    }
}

/// The relay as the threads that post to its inbox see it: weakly, set once `init` is done.
private final class WeakRelay: @unchecked Sendable {
    // Written once on the creating thread before any other thread can read it.
    weak var value: Relay?
}
