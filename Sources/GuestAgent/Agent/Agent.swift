#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// The guest agent's state: the event loop, the signalfd, the endpoint the host reaches it
/// through, the one connection, every session and the reaper.
///
/// Owns: the loop, the signalfd, the listening socket (or the dialing one), and through them
/// the connection and the sessions. Lives on the main thread only: everything runs in the
/// loop's handlers, so nothing needs a lock and "spawned" cannot race "exited". Ends when
/// `run()` returns after a shutdown (or when the only connection of an inherited `fd:`
/// stream closes); `main` then exits or powers off as `finalAction` says.
public final class Agent {
    /// How the agent came to run, which decides what shutdown ends with.
    public enum Role: Equatable, Sendable {
        /// PID 1 of a VM: sync, unmount, power off.
        case machineInit
        /// PID 1 of a PID namespace (the namespace backend): exit, which ends the namespace.
        case namespaceInit
        /// The child that carries on after handing PID 1 to an init: ask it to power off.
        case initChild(InitSystem)
        /// Not PID 1 (development, tests): a child subreaper; exit 0.
        case subreaper
    }

    /// What main does once `run()` returns.
    public enum FinalAction: Equatable, Sendable {
        case exit(Int32)
        case powerOff
    }

    public static let version = "0.1.0"
    /// Each subsystem and the version of it this agent speaks (docs/PROTOCOL.md, "Capabilities").
    public static let capabilities = ["exec/1", "pty/1", "stdin/1", "signal/1", "rlimit/1", "detach/1", "session/1",
                                      "shutdown/1", "seccomp/1"]
    /// Live sessions at most; more are refused with `limitReached`.
    static let maxSessions = 1024
    /// Finished detached sessions kept for a later `attach` when nobody has read them.
    static let maxUnreadSessions = 64
    public static let defaultShutdownGraceMs: UInt64 = 5000
    /// After the grace: how long KILLed sessions get to be reaped and their last frames to
    /// reach the host before the agent exits or powers off anyway.
    static let finalFlushTimeout = Duration.seconds(2)

    let loop: EventLoop
    let options: AgentOptions
    public let role: Role
    let users = UserDatabase()
    /// Limits every child starts with before its request's own: the agent raised its
    /// descriptor limit for itself, programs get the usual one back.
    let baseLimits: [csys_rlimit]
    /// The guest seccomp programs, each built once, not per exec (libseccomp compiles a policy
    /// in some hundred microseconds, and must not run in a fork child); shared by every child
    /// under that profile. `default` at start (nearly every exec uses it), `restricted` on
    /// first use.
    let seccompPrograms = GuestSeccompPrograms()
    private let hostname: String
    private let bootNs: UInt64
    private var readyNs: UInt64 = 0

    private let signalFD: CInt
    private var listener: CInt = -1
    /// `--listen fd:N` given a connected stream: served once; its end ends the agent.
    private var servesSingleStream = false
    private var reconnectDelayMs: UInt64 = 100
    private var dialing: CInt = -1
    private(set) var connection: Connection?

    private var sessions: [UInt32: Session] = [:]
    private var children: [pid_t: Session] = [:]
    private var unread: [Session] = []
    private var nextSessionNumber: UInt32 = 1
    private var scratch = [UInt8](repeating: 0, count: Frame.maxDataPayloadBytes)

    private(set) var shuttingDown = false
    private var finalizing = false
    /// `.initChild`: the init was asked to power off; its SIGTERM now means exit at once.
    private var powerOffRequested = false
    private var graceTimer: TimerID?
    public private(set) var finalAction = FinalAction.exit(0)

    /// Signals the agent takes through its signalfd (blocked in every thread, before any exists).
    public static let handledSignals: [CInt] = [SIGCHLD, SIGTERM, SIGINT, SIGHUP]

    public init(options: AgentOptions, role: Role, signalFD: CInt, bootNs: UInt64, baseLimits: [csys_rlimit]) throws(Errno) {
        self.loop = try EventLoop()
        self.options = options
        self.role = role
        self.signalFD = signalFD
        self.bootNs = bootNs
        self.baseLimits = baseLimits
        if case .failure(let failure) = seccompPrograms.program(for: .default) {
            Log.warning("\(failure.message); execs under the default profile will fail")
        }
        if options.seccomp == .unfiltered {
            Log.warning("--seccomp none: commands run without a seccomp filter unless their request names a profile")
        }
        // Boot is done (an init, if any, was exec'd before the fork that made this process).
        do { try GuestCapabilities.dropAgentBoundingSet(role: role) } catch {
            Log.warning("cannot lower the agent's own capabilities (\(error)); it keeps them, commands are bounded all the same")
        }
        var name = [UInt8](repeating: 0, count: 256)
        _ = name.withUnsafeMutableBufferPointer { gethostname(UnsafeMutableRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), 255) }
        self.hostname = String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Opens the endpoint and serves until shutdown.
    public func run() throws(BootError) {
        do {
            try loop.watch(signalFD, events: EventLoop.readable) { [unowned self] _ in signalsArrived() }
        } catch {
            throw BootError(stage: "signals", errno: error.rawValue, message: "cannot watch the signalfd: \(error)")
        }
        // Ready: the next thing is the endpoint, and an inherited stream gets its hello at once.
        readyNs = Clock.bootTimeNs()
        try openEndpoint()
        reap()   // children that exited before the loop existed (none, unless inherited)
        do { try loop.run() } catch {
            // epoll_wait fails only on a bug (EBADF, EFAULT, EINVAL).
            Log.warning("event loop failed: \(error)")
            finalAction = .exit(1)
        }
        releaseDescriptors()
    }

    /// Closes what the loop served (a connection still flushing, sessions not yet torn down,
    /// the listener or a pending dial) once it has ended. The process usually exits or powers
    /// off next, but a host that runs the agent in-process (the fuzz target) goes on: every
    /// input leaked its connection's socket before this.
    private func releaseDescriptors() {
        connection?.close()
        for session in Array(sessions.values) { session.teardown() }
        for fd in [listener, dialing] where fd >= 0 {
            loop.unwatch(fd)
            _ = Glibc.close(fd)
        }
        listener = -1
        dialing = -1
    }

    func withScratch<R>(_ count: Int, _ body: (UnsafeMutableRawBufferPointer) -> R) -> R {
        scratch.withUnsafeMutableBytes { body(UnsafeMutableRawBufferPointer(rebasing: $0[0..<min(count, $0.count)])) }
    }

    // MARK: endpoint

    private func openEndpoint() throws(BootError) {
        switch options.endpoint {
        case .listen(let address):
            if case .fd(let fd) = address {
                guard fcntl(fd, F_GETFD) >= 0 else {
                    throw BootError(stage: "listen", errno: EBADF, message: "--listen fd:\(fd): descriptor \(fd) is not open")
                }
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                if !Socket.isListening(fd) {
                    servesSingleStream = true
                    accept(fd)
                    return
                }
            }
            do {
                listener = try Socket.listen(address).release()
                try FileIO.setNonBlocking(listener)
            } catch let error as SocketError {
                throw BootError(stage: "listen", errno: error.errno?.rawValue ?? 0, message: "cannot listen on \(address): \(error)")
            } catch {
                throw BootError(stage: "listen", errno: (error as? Errno)?.rawValue ?? 0, message: "cannot listen on \(address): \(error)")
            }
            watchListener()
        case .connect(let address):
            if case .fd(let fd) = address {
                guard fcntl(fd, F_GETFD) >= 0 else {
                    throw BootError(stage: "connect", errno: EBADF, message: "--connect fd:\(fd): descriptor \(fd) is not open")
                }
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                servesSingleStream = true
                accept(fd)
                return
            }
            dial(address)
        }
    }

    private func watchListener() {
        do {
            try loop.watch(listener, events: EventLoop.readable) { [unowned self] _ in acceptPending() }
        } catch {
            Log.warning("cannot watch the listening socket: \(error)")
        }
    }

    private func acceptPending() {
        guard connection == nil else { return }
        do {
            guard let fd = try Socket.accept(listener) else { return }
            loop.unwatch(listener)   // one connection at a time; the next waits in the backlog
            accept(fd.release())
        } catch {
            // EMFILE and friends: the pending connection stays queued; try again shortly.
            Log.warning("accept failed: \(error)")
            loop.unwatch(listener)
            loop.schedule(after: .milliseconds(100)) { [unowned self] in if connection == nil { watchListener() } }
        }
    }

    /// `--connect`: dial without blocking; retry with backoff until the host answers.
    private func dial(_ address: Address) {
        guard !shuttingDown else { return }
        do {
            let (fd, connected) = try NonBlockingConnect.start(address).release()
            if connected {
                reconnectDelayMs = 100
                accept(fd)
                return
            }
            dialing = fd
            try? loop.watch(dialing, events: EventLoop.writable) { [unowned self] _ in
                let fd = dialing
                loop.unwatch(fd)
                dialing = -1
                if let error = NonBlockingConnect.result(of: fd) {
                    _ = Glibc.close(fd)
                    redial(address, after: "\(address): \(error)")
                } else {
                    reconnectDelayMs = 100
                    accept(fd)
                }
            }
        } catch {
            redial(address, after: error.description)
        }
    }

    private func redial(_ address: Address, after problem: String) {
        if reconnectDelayMs >= 1600 { Log.warning("cannot connect: \(problem); retrying") }
        let delay = reconnectDelayMs
        reconnectDelayMs = min(reconnectDelayMs * 2, 5000)
        loop.schedule(after: .milliseconds(Int64(delay))) { [unowned self] in dial(address) }
    }

    private func accept(_ fd: CInt) {
        try? FileIO.setNonBlocking(fd)
        let connection = Connection(agent: self, adopting: fd)
        self.connection = connection
        connection.start(hello: Hello(role: .agent, name: hostname, pid: getpid(), capabilities: Self.capabilities,
                                      agentVersion: Self.version, bootNs: bootNs, readyNs: readyNs))
    }

    func connectionClosed(_ closed: Connection) {
        guard connection === closed else { return }
        connection = nil
        if servesSingleStream {
            // Nothing else can connect: end like a shutdown (detached sessions included).
            shutdown(graceMs: nil, reason: "the connection closed")
            return
        }
        if shuttingDown { return }
        switch options.endpoint {
        case .listen: watchListener()
        case .connect(let address):
            reconnectDelayMs = 100
            loop.schedule(after: .milliseconds(100)) { [unowned self] in dial(address) }
        }
    }

    // MARK: requests that start something on a new id

    func startRequest(_ frame: FrameView, on connection: Connection) {
        let id = frame.header.id
        switch frame.header.kind {
        case .exec:
            let request: ExecRequest
            do { request = try ExecRequest(cbor: frame.payload) } catch {
                connection.sendError(.badPayload, "exec: \(error.description)", id: id)
                return
            }
            startExec(request, on: connection, id: id)
        case .listSessions:
            do { _ = try ListSessions(cbor: frame.payload) } catch {
                connection.sendError(.badPayload, "listSessions: \(error.description)", id: id)
                return
            }
            let list = sessions.values.filter { $0.phase != .finished }.sorted { $0.number < $1.number }.map(\.info)
            connection.send(SessionList(sessions: list), id: id, flags: .end)
        case .attach:
            let request: Attach
            do { request = try Attach(cbor: frame.payload) } catch {
                connection.sendError(.badPayload, "attach: \(error.description)", id: id)
                return
            }
            guard let session = sessions[request.session], session.phase != .finished else {
                connection.sendError(.unknownSession, "no session \(request.session) on this agent", id: id)
                return
            }
            guard !session.isBound else {
                connection.sendError(.sessionInUse, "session \(request.session) is attached on another id", id: id)
                return
            }
            unread.removeAll { $0 === session }
            session.attach(to: connection, id: id, replay: request.replay)
        default:
            connection.sendError(.unknownKind, "kind \(frame.header.kind) cannot start a session", id: id)
        }
    }

    private func startExec(_ request: ExecRequest, on connection: Connection, id: UInt32) {
        guard !shuttingDown else {
            connection.sendError(.shuttingDown, "the agent is shutting down and starts nothing new", id: id)
            return
        }
        guard sessions.count < Self.maxSessions else {
            connection.sendError(.limitReached, "\(Self.maxSessions) sessions are running already", id: id)
            return
        }
        let child: StartedChild
        let plan: SpawnPlan
        do {
            plan = try SpawnPlan(request: request, users: users, baseLimits: baseLimits)
            let profile = request.seccomp ?? options.seccomp
            if request.seccomp == .unfiltered {
                Log.warning("exec \(plan.program): seccomp none requested: the command runs without a filter")
            }
            let filter = try seccompPrograms.program(for: profile)?.get()
            child = try withExtendedLifetime(filter) { () throws(SpawnFailure) -> StartedChild in
                try ChildSpawner.start(plan, request: request, seccompFilter: filter?.pointer)
            }
        } catch {
            connection.send(error.event, id: id, flags: .end)
            return
        }
        let number = nextSessionNumber
        nextSessionNumber = nextSessionNumber == UInt32.max ? 1 : nextSessionNumber + 1
        let session = Session(agent: self, number: number, request: request, child: child, program: plan.program)
        sessions[number] = session
        children[child.pid] = session
        session.bind(to: connection, id: id)
        connection.bind(session, id: id)
    }

    // MARK: session bookkeeping

    /// A detached session completed while nobody watched: kept for `attach`, a bounded number.
    func keepUnread(_ session: Session) {
        guard !unread.contains(where: { $0 === session }) else { return }
        unread.append(session)
        if unread.count > Self.maxUnreadSessions { unread.removeFirst().teardown() }
        checkShutdownProgress()
    }

    func sessionFinished(_ session: Session) {
        sessions[session.number] = nil
        unread.removeAll { $0 === session }
        checkShutdownProgress()
    }

    // MARK: signals and the reaper

    private func signalsArrived() {
        for signal in Signals.drain(signalFD) {
            switch signal {
            case SIGCHLD:
                reap()
            case SIGTERM, SIGINT:
                if powerOffRequested {
                    // The init's own end of shutdown (systemd-shutdown, busybox init) TERMs
                    // every process left and waits for them before it powers off: go.
                    Log.info("the init is powering off; exiting")
                    finalAction = .exit(0)
                    loop.stopping = true
                } else if shuttingDown {
                    // Asked again: no more grace.
                    graceOver()
                } else {
                    shutdown(graceMs: nil, reason: signal == SIGTERM ? "SIGTERM" : "SIGINT")
                }
            default:
                Log.info("ignoring signal \(signal)")
            }
        }
    }

    /// `waitpid(-1)` until nothing is left to reap: the only place the agent waits for a
    /// child. A pid that is no session's leader is an orphan the agent inherited (as PID 1
    /// or subreaper): reaping it is all there is to do.
    private func reap() {
        while true {
            var status: CInt = 0
            let pid = waitpid(-1, &status, WNOHANG)
            if pid == 0 { break }
            if pid < 0 {
                if errno == EINTR { continue }
                break   // ECHILD
            }
            if let session = children.removeValue(forKey: pid) {
                session.leaderExited(status: status)
            }
        }
        checkShutdownProgress()
    }

    // MARK: shutdown

    /// `shutdown` or SIGTERM: no new sessions; SIGTERM to every session's process group; after
    /// `graceMs` (default 5 s) SIGKILL; then exit or power off (see `Role`).
    func shutdown(graceMs: UInt64?, reason: String) {
        guard !shuttingDown else { return }
        shuttingDown = true
        let grace = graceMs ?? Self.defaultShutdownGraceMs
        Log.info("shutting down (\(reason)), grace \(grace) ms")
        if listener >= 0 {
            loop.unwatch(listener)
            _ = Glibc.close(listener)
            listener = -1
        }
        for session in sessions.values { session.killGroup(SIGTERM) }
        graceTimer = loop.schedule(after: .milliseconds(Int64(clamping: grace))) { [unowned self] in graceOver() }
        checkShutdownProgress()
    }

    private func graceOver() {
        if let timer = graceTimer { loop.cancel(timer) }
        graceTimer = nil
        guard !finalizing else { return }
        for session in sessions.values { session.killGroup(SIGKILL) }
        killOrphans()
        finalize()
    }

    /// Every session's leader exited and its output ended: nothing more to wait for.
    private func checkShutdownProgress() {
        guard shuttingDown, !finalizing else { return }
        if sessions.values.allSatisfy({ $0.isComplete || $0.phase == .finished }) {
            if let timer = graceTimer { loop.cancel(timer) }
            graceTimer = nil
            killOrphans()
            finalize()
        }
    }

    /// SIGKILL to processes the agent inherited that belong to no session: everything but
    /// itself as PID 1, its remaining children as a subreaper.
    private func killOrphans() {
        switch role {
        case .machineInit, .namespaceInit:
            _ = kill(-1, SIGKILL)
        case .subreaper, .initChild:
            for pid in Self.childrenOfSelf() { _ = kill(pid, SIGKILL) }
        }
    }

    /// Processes whose parent is the agent, from /proc.
    static func childrenOfSelf() -> [pid_t] {
        let me = getpid()
        guard let dir = opendir("/proc") else { return [] }
        defer { closedir(dir) }
        var result: [pid_t] = []
        while let entry = readdir(dir) {
            // The name in place, up to its NUL: readdir's records are only as long as their
            // name, so copying the whole 256-byte d_name field reads past the last one (ASan
            // caught it in the agent fuzz target).
            let name = withUnsafeMutablePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 1) { String(cString: $0) }
            }
            guard let pid = pid_t(name), pid != me,
                  let stat = try? FileIO.readFile("/proc/\(pid)/stat", limit: 1024) else { continue }
            // Fields after the last ')' (the name may hold spaces and parentheses): state ppid ...
            guard let close = stat.lastIndex(of: UInt8(ascii: ")")) else { continue }
            let fields = stat[(close + 1)...].split(separator: UInt8(ascii: " "))
            if fields.count > 1, let ppid = pid_t(String(decoding: fields[1], as: UTF8.self)), ppid == me {
                result.append(pid)
            }
        }
        return result
    }

    /// Waits (in the loop) for the last frames to reach the host, then stops the loop.
    private func finalize() {
        guard !finalizing else { return }
        finalizing = true
        let deadline = EventLoop.now() + UInt64(Self.finalFlushTimeout.components.seconds) * 1_000_000_000
        func check() {
            let sessionsLeft = sessions.values.contains { $0.phase != .finished && !$0.isComplete }
            let bytesLeft = (connection?.pendingBytes ?? 0) > 0
            if (!sessionsLeft && !bytesLeft) || EventLoop.now() >= deadline {
                stop()
            } else {
                loop.schedule(after: .milliseconds(10)) { check() }
            }
        }
        check()
    }

    private func stop() {
        switch role {
        case .machineInit:
            finalAction = .powerOff
            loop.stopping = true
        case .namespaceInit, .subreaper:
            finalAction = .exit(0)
            loop.stopping = true
        case .initChild(let initSystem):
            // The init takes it from here and ends this process with everything else; the
            // agent keeps answering (refusing new sessions) until its SIGTERM.
            powerOffRequested = true
            Log.info(initSystem.requestPowerOff())
        }
    }
}
