#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// The guest agent: a router over subsystems. It owns the event loop, the endpoint the host
/// reaches it through, the one link to the host, and the subsystems (exec sessions today);
/// it routes each frame from the link to the subsystem that owns its kind or its id
/// (`AgentRouter.swift`), reaps children, and shuts down (`Agent+Shutdown.swift`).
///
/// Ownership runs one way: the agent calls the link, the endpoint and the subsystems; they
/// report back only through the closures the agent gave them (`onFrame`, `onClosed`,
/// `onConnected`, `onProgress`). Lives on the main thread only: everything runs in the loop's
/// handlers, so nothing needs a lock and "spawned" cannot race "exited". Ends when `run()`
/// returns after a shutdown (or when the only connection of an inherited `fd:` stream
/// closes); `main` then exits or powers off as `finalAction` says. The signalfd is borrowed:
/// whoever made it closes it.
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
                                      "shutdown/1", "seccomp/1", "fs/1", "port/1", "proc/1"]
    public static let defaultShutdownGraceMs: UInt64 = 5000
    /// After the grace: how long KILLed sessions get to be reaped and their last frames to
    /// reach the host before the agent exits or powers off anyway.
    static let finalFlushTimeout = Duration.seconds(2)
    /// Signals the agent takes through its signalfd (blocked in every thread, before any exists).
    public static let handledSignals: [CInt] = [SIGCHLD, SIGTERM, SIGINT, SIGHUP]

    let loop: EventLoop
    public let role: Role
    let endpoint: HostEndpoint
    let exec: AgentExec
    let files: AgentFiles
    /// Exposed ports: the tunnel endpoint and its connections (not on the framed link).
    let ports: AgentPorts
    /// Every subsystem, once: the router asks them who holds an id, and tells them when the
    /// link drains or closes.
    let subsystems: [AgentSubsystem]
    /// The router's table: which subsystem serves the kinds that open a request.
    let routes: [FrameKind: AgentSubsystem]
    private let signalFD: CInt
    private let hostname: String
    private let bootNs: UInt64
    private var readyNs: UInt64 = 0
    /// The one link to the host (the relay), while connected.
    private(set) var link: FramedConnection?
    /// The version both sides speak, once the peer's hello arrived.
    var peerVersion: UInt32?
    /// Shutdown's progress (`Agent+Shutdown.swift`).
    var shutdownState = ShutdownState()
    public internal(set) var finalAction = FinalAction.exit(0)

    public init(options: AgentOptions, role: Role, signalFD: CInt, bootNs: UInt64, baseLimits: [csys_rlimit]) throws(Errno) {
        self.loop = try EventLoop()
        self.role = role
        self.signalFD = signalFD
        self.endpoint = HostEndpoint(loop: loop, address: options.endpoint)
        self.exec = AgentExec(loop: loop, spawner: ExecSpawner(baseLimits: baseLimits, defaultProfile: options.seccomp))
        self.files = AgentFiles(loop: loop)
        self.ports = AgentPorts(loop: loop, address: options.tunnel)
        self.subsystems = [exec, files, AgentProcesses(loop: loop, exec: exec)]
        var routes: [FrameKind: AgentSubsystem] = [:]
        for subsystem in subsystems {
            for kind in subsystem.startKinds {
                assert(routes[kind] == nil, "two subsystems claim kind \(kind)")
                routes[kind] = subsystem
            }
        }
        self.routes = routes
        // Boot is done (an init, if any, was exec'd before the fork that made this process).
        do { try GuestCapabilities.dropAgentBoundingSet(role: role) } catch {
            Log.warning("cannot lower the agent's own capabilities (\(error)); it keeps them, commands are bounded all the same")
        }
        self.hostname = Self.hostname()
        self.bootNs = bootNs
        exec.onProgress = { [unowned self] in checkShutdownProgress() }
        endpoint.onConnected = { [unowned self] fd in connected(fd) }
    }

    private static func hostname() -> String {
        var name = [UInt8](repeating: 0, count: 256)
        _ = name.withUnsafeMutableBufferPointer { gethostname(UnsafeMutableRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), 255) }
        return String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
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
        try endpoint.open()
        try ports.open()
        reap()   // children that exited before the loop existed (none, unless inherited)
        do { try loop.run() } catch {
            // epoll_wait fails only on a bug (EBADF, EFAULT, EINVAL).
            Log.warning("event loop failed: \(error)")
            finalAction = .exit(1)
        }
        releaseDescriptors()
    }

    /// Closes what the loop served (a link still flushing, sessions not yet ended, the
    /// listener or a pending dial) once it has ended. The process usually exits or powers off
    /// next, but a host that runs the agent in-process (the fuzz target) goes on.
    private func releaseDescriptors() {
        link?.close()
        exec.endAll()
        files.endAll()
        endpoint.close()
        ports.close()
        loop.unwatch(signalFD, "the signalfd")
    }

    // MARK: the link

    /// The agent's one link, to its host:
    /// - up to 128 KiB read per readiness event (in 64 KiB reads): a full data frame is 64 KiB
    ///   plus its header, and one 64 KiB read per event took two reads and two epoll rounds
    ///   per frame of an upload (256 KiB was no faster, and its read buffer cost RSS);
    /// - congested at 512 KiB queued (sessions stop reading their pipes), resumed at 128 KiB:
    ///   with output windows widened to 512 KiB (PROTOCOL.md 8) the default 1 MiB let the
    ///   queue's buffer double to 2 MiB, and the agent's peak RSS pass its 8 MB budget.
    static let linkLimits: FramedConnection.Limits = {
        var limits = FramedConnection.Limits()
        limits.readLimitBytes = 128 << 10
        limits.highWaterBytes = 512 << 10
        limits.lowWaterBytes = 128 << 10
        return limits
    }()

    private func connected(_ fd: consuming OwnedFD) {
        let socket: FrameSocket
        do { socket = try FrameSocket(adopting: fd) } catch {
            Log.warning("cannot use the connection: \(error)")
            endpoint.resume()
            return
        }
        let link = FramedConnection(socket: socket, loop: loop, limits: Self.linkLimits)
        self.link = link
        link.onFrame = { [unowned self, unowned link] frame in route(frame, on: link) }
        link.onFramingError = { [unowned self, unowned link] error in
            // The stream cannot be split into frames any more: answer, flush, close.
            reply(RequestError(.framing, error.description), id: 0, on: link)
            link.closeAfterFlush()
        }
        link.onDrained = { [unowned self, unowned link] in for subsystem in subsystems { subsystem.linkDrained(link) } }
        link.onClosed = { [unowned self, unowned link] _ in linkClosed(link) }
        // The agent's hello is its first frame on every connection.
        link.send(Hello(role: .agent, name: hostname, pid: getpid(), capabilities: Self.capabilities,
                        agentVersion: Self.version, bootNs: bootNs, readyNs: readyNs), id: 0)
        link.start()
    }

    private func linkClosed(_ closed: FramedConnection) {
        guard link === closed else { return }
        link = nil
        peerVersion = nil
        for subsystem in subsystems { subsystem.linkClosed(closed) }
        if endpoint.servesSingleStream {
            // Nothing else can connect: end like a shutdown (detached sessions included).
            shutdown(graceMs: nil, reason: "the connection closed")
            return
        }
        if !shutdownState.requested { endpoint.resume() }
    }

    /// Bytes queued to the host and not yet written (shutdown waits for them to go out).
    var pendingBytes: Int { link?.pendingBytes ?? 0 }

    // MARK: signals and the reaper

    private func signalsArrived() {
        for signal in Signals.drain(signalFD) {
            switch signal {
            case SIGCHLD: reap()
            case SIGTERM, SIGINT: terminationRequested(by: signal)
            default: Log.info("ignoring signal \(signal)")
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
            exec.leaderExited(pid: pid, status: status)
        }
        checkShutdownProgress()
    }
}
