#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import Synchronization
import TetherPosix
import TetherProtocol

/// One connection to a relay (or straight to an agent), served by its own thread running an
/// epoll loop: connect, socket reads and writes all happen there, never inside a Task.
/// Tasks talk to it through `shared` (commands, under a mutex held only briefly) and wait
/// for answers on continuations the thread resumes.
///
/// Owns: the thread, its `EventLoop` and the socket, through a `FramedConnection` (closed when
/// the thread ends). Ends when
/// the peer closes, on a socket error, or on `close()`; every open session then ends with
/// `connectionClosed`.
final class RelayConnection: Sendable {
    let address: Address
    let name: String
    let helloTimeout: Duration
    let onNotice: (@Sendable (TetherError) -> Void)?
    /// How long a session may wait on a silent agent before it fails (nil: for ever).
    let agentTimeout: Duration?

    enum Command: Sendable {
        case start(SessionChannel, Frame)
        case frame(Frame, SessionChannel?)
        case close
    }

    struct Shared {
        var commands: [Command] = []
        var nextID: UInt32 = 1
        var live: Set<UInt32> = []
        var closed: TetherError?
        var hello: Hello?
        var opened: CheckedContinuation<Result<Hello, TetherError>, Never>?
        var pings: [UInt64: (continuation: CheckedContinuation<Result<Duration, TetherError>, Never>, sentNs: UInt64)] = [:]
        var nextNonce: UInt64 = 1
    }
    let shared = Mutex(Shared())
    private let waker: EventLoop.Waker
    private let core: Core

    /// The thread's own state: the loop, the connection and the sessions by id.
    private final class Core: @unchecked Sendable {
        let loop: EventLoop
        var link: FramedConnection?
        var channels: [UInt32: SessionChannel] = [:]
        var watchdog: AgentWatchdog?
        init(loop: EventLoop) { self.loop = loop }
    }

    /// Reads of up to 4 MiB per readiness event: the client has one peer and streams output.
    private static let limits: FramedConnection.Limits = {
        var limits = FramedConnection.Limits()
        limits.readChunkBytes = 256 << 10
        limits.readLimitBytes = 4 << 20
        return limits
    }()

    private init(address: Address, name: String, helloTimeout: Duration, onNotice: (@Sendable (TetherError) -> Void)?,
                 agentTimeout: Duration?) throws(TetherError) {
        self.address = address
        self.name = name
        self.helloTimeout = helloTimeout
        self.onNotice = onNotice
        self.agentTimeout = agentTimeout
        let loop: EventLoop
        do { loop = try EventLoop() } catch {
            throw TetherError(.internal, "cannot create an event loop: \(error)", operation: "connect", errno: error.rawValue)
        }
        core = Core(loop: loop)
        waker = loop.waker
    }

    /// Connects and waits for the server's hello. One attempt; `TetherClient` retries.
    static func open(_ address: Address, name: String, helloTimeout: Duration = .seconds(10),
                     onNotice: (@Sendable (TetherError) -> Void)? = nil, agentTimeout: Duration? = nil) async throws(TetherError) -> RelayConnection {
        let connection = try RelayConnection(address: address, name: name, helloTimeout: helloTimeout, onNotice: onNotice,
                                             agentTimeout: agentTimeout)
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<Hello, TetherError>, Never>) in
            connection.shared.withLock { $0.opened = continuation }
            DedicatedThread.start(named: "tether-client") { connection.threadMain() }
        }
        _ = try result.get()
        return connection
    }

    var hello: Hello? { shared.withLock { $0.hello } }
    var isClosed: Bool { shared.withLock { $0.closed != nil } }

    // MARK: used by tasks

    /// Opens a session: allocates an id, registers the channel and sends `frame` (START).
    func startSession(kind: FrameKind, payload: [UInt8], operation: String, context: [String: String]) throws(TetherError) -> SessionChannel {
        let result = shared.withLock { shared -> Result<SessionChannel, TetherError> in
            if let closed = shared.closed { return .failure(closed.operation(operation).adding(context)) }
            // Monotonic: an id comes back only after 2^32 sessions, long after its last frame.
            var id = shared.nextID
            while id == 0 || shared.live.contains(id) { id = id == .max ? 1 : id + 1 }
            shared.nextID = id == .max ? 1 : id + 1
            shared.live.insert(id)
            let channel = SessionChannel(id: id, connection: self, operation: operation, context: context)
            let frame = Frame(id: id, flags: .start, kind: kind, payload: payload)
            shared.commands.append(.start(channel, frame))
            return .success(channel)
        }
        waker.wake()
        return try result.get()
    }

    /// Queues a frame on a session (dropped if the session has already ended).
    func send(_ frame: Frame, for channel: SessionChannel?) {
        let wake = shared.withLock { shared -> Bool in
            guard shared.closed == nil else { return false }
            shared.commands.append(.frame(frame, channel))
            return shared.commands.count == 1
        }
        if wake { waker.wake() }
    }

    func ping() async throws(TetherError) -> Duration {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<Duration, TetherError>, Never>) in
            let failure = shared.withLock { shared -> TetherError? in
                if let closed = shared.closed { return closed.operation("ping") }
                let nonce = shared.nextNonce
                shared.nextNonce += 1
                shared.pings[nonce] = (continuation, Clock.monotonicNs())
                shared.commands.append(.frame(Frame(id: 0, kind: .ping, payload: Ping(nonce: nonce).cborBytes), nil))
                return nil
            }
            if let failure { continuation.resume(returning: .failure(failure)) } else { waker.wake() }
        }
        return try result.get()
    }

    func close() {
        shared.withLock { $0.commands.append(.close) }
        waker.wake()
    }

    // MARK: the connection's thread

    private func threadMain() {
        let loop = core.loop
        let socket: FrameSocket
        do {
            socket = try FrameSocket(adopting: try Socket.connect(address))
        } catch let error as SocketError {
            // Nobody listens yet (no socket, refused, backlog full): waiting can fix it.
            let transient = [.noEntry, .connectionRefused, .again].contains(error.errno)
            end(TetherError(transient ? .relayUnreachable : .connectionFailed,
                            error.errno == nil ? "cannot connect to \(address): \(error)" : "cannot connect to \(address)",
                            operation: "connect", context: ["socket": address.description], errno: error.errno?.rawValue))
            return
        } catch {
            end(TetherError(.connectionFailed, "cannot connect to \(address): \(error)", operation: "connect",
                            context: ["socket": address.description]))
            return
        }
        let link = FramedConnection(socket: socket, loop: loop, limits: Self.limits)
        core.link = link
        link.onFrame = { [self] view in handle(Frame(view)) }
        link.onFramingError = { [self] error in
            end(TetherError(.protocolError, "the relay sent bytes that are not frames: \(error.description)",
                            operation: "receive", context: ["socket": address.description]))
        }
        link.onClosed = { [self] reason in connectionClosed(reason) }
        link.send(Hello(role: .client, name: name, pid: getpid()), id: 0)
        loop.onWake { [self] in runCommands() }
        link.start()
        if let agentTimeout {
            core.watchdog = AgentWatchdog(timeout: agentTimeout, loop: loop, sendPing: { [self] ping in
                core.link?.send(ping, id: 0)
            }, expire: { [self] silence in
                // Every session on this connection waits on the same agent: end them all, and
                // the connection with them (the relay then kills what they started; detached
                // sessions stay). The client's next call opens a new connection.
                end(TetherError(.remote(.agentUnresponsive),
                                "the agent did not answer for \(Duration.describe(milliseconds: silence.milliseconds)) (limit \(Duration.describe(milliseconds: agentTimeout.milliseconds)))",
                                operation: "connection", context: ["socket": address.description]))
            })
        }
        _ = loop.schedule(after: helloTimeout) { [self] in
            guard shared.withLock({ $0.hello == nil }) else { return }
            end(TetherError(.timedOut, "\(address) accepted the connection but sent no hello within \(helloTimeout)",
                            operation: "connect", context: ["socket": address.description],
                            suggestion: "an agent serves one connection at a time: is a relay or another client connected to it?"))
        }
        do { try loop.run() } catch {
            end(TetherError(.internal, "epoll_wait: \(error)", operation: "connection", errno: error.rawValue))
        }
        core.watchdog = nil   // its closures hold this connection
        core.link?.close()
        core.link = nil
    }

    private func runCommands() {
        let commands = shared.withLock { shared -> [Command] in
            defer { shared.commands.removeAll(keepingCapacity: true) }
            return shared.commands
        }
        guard let link = core.link else { return }
        for command in commands {
            switch command {
            case .start(let channel, let frame):
                core.channels[channel.id] = channel
                if AgentWatchdog.watches(frame.kind) { core.watchdog?.watch(channel.id) }
                link.send(frame)
            case .frame(let frame, let channel):
                if let channel, core.channels[channel.id] !== channel { continue }
                link.send(frame)
            case .close:
                end(TetherError(.connectionClosed, "the client closed the connection", operation: "close"))
                return
            }
        }
    }

    /// The connection ended under the client: the relay closed it (a relay that turns a
    /// client away says why first, and that frame was handled before this), or the socket
    /// failed.
    private func connectionClosed(_ reason: FramedConnection.CloseReason) {
        guard core.link != nil else { return }
        let context = ["socket": address.description]
        switch reason {
        case .closed:
            end(TetherError(.connectionClosed, "the relay closed the connection (end of stream)", operation: "receive", context: context))
        case .ioError(let errno):
            end(TetherError(.connectionClosed, "the relay closed the connection (\(errno))", operation: "receive",
                            context: context, errno: errno.rawValue))
        case .watchFailed(let errno):
            // Without epoll the rest of the queue would never be written: the connection cannot go on.
            end(TetherError(.internal, "epoll_ctl on the relay connection failed: \(errno)", operation: "send",
                            context: context, errno: errno.rawValue))
        }
    }

    private func handle(_ frame: Frame) {
        // Any frame but an error on the control channel is the far side answering.
        if frame.id != 0 || frame.kind == .pong { core.watchdog?.heard() }
        if frame.id == 0 {
            handleControl(frame)
            return
        }
        guard let channel = core.channels[frame.id] else { return }
        let operation = channel.operation
        func decoded<M: Message>(_ type: M.Type) -> M? {
            do { return try frame.decode(M.self) } catch {
                channel.finish(.failed(TetherError(.protocolError, "\(frame.kind) payload: \(error.description)",
                                                   operation: operation, context: channel.context)))
                return nil
            }
        }
        switch frame.kind {
        case .stdout: channel.deliver(.event(.stdout(frame.payload)))
        case .stderr: channel.deliver(.event(.stderr(frame.payload)))
        case .started: if let m = decoded(Started.self) { channel.deliver(.event(.started(pid: m.pid))) }
        case .stdinError:
            if let m = decoded(StdinError.self) { channel.deliver(.event(.stdinError(errno: m.errno, message: m.message))) }
        case .exited: if let m = decoded(Exited.self) { channel.deliver(.event(.exited(ExitStatus(m)))) }
        case .ack: if let m = decoded(Ack.self) { channel.stdinAcked(m.bytes) }
        case .attached: if let m = decoded(Attached.self) { channel.deliver(.attached(m)) }
        case .done: channel.finish(.done)
        case .failed:
            if let m = decoded(Failed.self) {
                channel.finish(.failed(TetherError.spawnFailed(m, operation: operation, context: channel.context)))
            }
        case .error:
            if let m = decoded(ErrorMessage.self) {
                channel.finish(.failed(TetherError(.remote(m.code), m.message.isEmpty ? "\(m.code)" : m.message,
                                                   operation: operation, context: channel.context, errno: m.errno)))
            }
        case .detached:
            if let m = decoded(Detached.self) { channel.finish(.detached(session: m.session)) }
        default:
            channel.deliver(.reply(frame))
        }
        if frame.flags.contains(.end) {
            channel.finish(.done)  // no-op when a specific end was set above
            core.channels[frame.id] = nil
            core.watchdog?.unwatch(frame.id)
            _ = shared.withLock { $0.live.remove(frame.id) }
        }
    }

    private func handleControl(_ frame: Frame) {
        switch frame.kind {
        case .hello:
            guard let hello = try? frame.decode(Hello.self) else {
                end(TetherError(.protocolError, "the relay's hello is undecodable", operation: "connect"))
                return
            }
            let opened = shared.withLock { shared -> CheckedContinuation<Result<Hello, TetherError>, Never>? in
                shared.hello = hello
                defer { shared.opened = nil }
                return shared.opened
            }
            opened?.resume(returning: .success(hello))
        case .pong:
            guard let pong = try? frame.decode(Pong.self) else { return }
            let waiting = shared.withLock { $0.pings.removeValue(forKey: pong.nonce) }
            if let waiting {
                let elapsed = Clock.monotonicNs() - waiting.sentNs
                waiting.continuation.resume(returning: .success(.nanoseconds(Int64(elapsed))))
            }
        case .ping:
            if let ping = try? frame.decode(Ping.self) { core.link?.send(Pong(nonce: ping.nonce), id: 0) }
        case .error:
            guard let message = try? frame.decode(ErrorMessage.self) else { return }
            let error = TetherError(.remote(message.code), message.message, operation: "ping",
                                    context: ["socket": address.description], errno: message.errno)
            // RelayConnection-level news: the waiting pings cannot be answered.
            let pings = shared.withLock { shared -> [CheckedContinuation<Result<Duration, TetherError>, Never>] in
                defer { shared.pings.removeAll() }
                return shared.pings.values.map(\.continuation)
            }
            for ping in pings { ping.resume(returning: .failure(error)) }
            // tooManyClients: the relay did not take this connection and closes it.
            if message.code == .framing || message.code == .unsupported || message.code == .tooManyClients {
                end(error.operation("connection"))
            } else {
                onNotice?(error.operation("connection"))
            }
        default:
            break
        }
    }

    /// Ends the connection: every session and waiter gets `error`.
    private func end(_ error: TetherError) {
        let (opened, pings) = shared.withLock { shared in
            if shared.closed == nil { shared.closed = error }
            let opened = shared.opened
            shared.opened = nil
            let pings = shared.pings.values.map(\.continuation)
            shared.pings.removeAll()
            shared.commands.removeAll()
            return (opened, pings)
        }
        opened?.resume(returning: .failure(error))
        for ping in pings { ping.resume(returning: .failure(error.operation("ping"))) }
        for channel in core.channels.values {
            channel.finish(.failed(TetherError(error.code, error.message, operation: channel.operation,
                                               context: channel.context.merging(error.context) { a, _ in a }, errno: error.errno)))
        }
        core.channels.removeAll()
        let link = core.link
        core.link = nil
        link?.close()
        core.loop.stopping = true
    }
}
