#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// Where the host reaches the agent: a listening socket (`--listen`), a dial that retries
/// with backoff (`--connect`), or one inherited connected stream (`fd:N`). Hands each
/// connected stream to `onConnected`, one at a time: the owner calls `resume()` once it is
/// done with the last one.
///
/// Owns the listening socket or the dial in progress. Lives on the agent's loop thread. Ends
/// with `close()` (shutdown, or the agent stopping).
final class HostEndpoint {
    private let loop: EventLoop
    private let address: AgentOptions.Endpoint
    private var listener: OwnedFD?
    private var dialing: OwnedFD?
    private var reconnectDelayMs: UInt64 = 100
    private var closed = false
    /// `fd:N` given a connected stream: served once; its end ends the agent.
    private(set) var servesSingleStream = false
    /// A connected, nonblocking stream.
    var onConnected: (consuming OwnedFD) -> Void = { _ in }

    init(loop: EventLoop, address: AgentOptions.Endpoint) {
        self.loop = loop
        self.address = address
    }

    /// Listens, dials, or hands over the inherited stream at once.
    func open() throws(BootError) {
        switch address {
        case .listen(let address):
            if case .fd(let fd) = address {
                try Self.adoptInherited(fd, flag: "--listen")
                if !Socket.isListening(fd) {
                    servesSingleStream = true
                    connected(OwnedFD(adopting: fd))
                    return
                }
            }
            do {
                let socket = try Socket.listen(address)
                try socket.setNonBlocking()
                listener = consume socket
            } catch let error as SocketError {
                throw BootError(stage: "listen", errno: error.errno?.rawValue ?? 0, message: "cannot listen on \(address): \(error)")
            } catch {
                throw BootError(stage: "listen", errno: (error as? Errno)?.rawValue ?? 0, message: "cannot listen on \(address): \(error)")
            }
            watchListener()
        case .connect(let address):
            if case .fd(let fd) = address {
                try Self.adoptInherited(fd, flag: "--connect")
                servesSingleStream = true
                connected(OwnedFD(adopting: fd))
                return
            }
            dial(address)
        }
    }

    /// The last stream ended: accept the next one, or dial again.
    func resume() {
        guard !closed, !servesSingleStream else { return }
        switch address {
        case .listen: watchListener()
        case .connect(let address):
            reconnectDelayMs = 100
            loop.schedule(after: .milliseconds(100)) { [weak self] in self?.dial(address) }
        }
    }

    /// Stops listening and dialing; nothing new connects.
    func close() {
        closed = true
        if let fd = listener?.raw { loop.unwatch(fd, "the listening socket") }
        if let fd = dialing?.raw { loop.unwatch(fd, "the connection being dialed") }
        listener = nil
        dialing = nil
    }

    private static func adoptInherited(_ fd: CInt, flag: String) throws(BootError) {
        guard fcntl(fd, F_GETFD) >= 0 else {
            throw BootError(stage: flag == "--listen" ? "listen" : "connect", errno: EBADF,
                            message: "\(flag) fd:\(fd): descriptor \(fd) is not open")
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    private func connected(_ fd: consuming OwnedFD) {
        try? fd.setNonBlocking()
        onConnected(fd)
    }

    // MARK: listening

    private func watchListener() {
        guard let fd = listener?.raw, !loop.isWatching(fd) else { return }
        do {
            try loop.watch(fd, events: EventLoop.readable) { [unowned self] _ in acceptPending() }
        } catch {
            // Nothing would ever accept: try again shortly rather than go deaf.
            Log.warning("cannot watch the listening socket: \(error); retrying")
            loop.schedule(after: .milliseconds(100)) { [weak self] in self?.resume() }
        }
    }

    private func acceptPending() {
        guard let fd = listener?.raw else { return }
        do {
            guard let stream = try Socket.accept(fd) else { return }
            loop.unwatch(fd, "the listening socket")   // one connection at a time; the next waits in the backlog
            connected(stream)
        } catch {
            // EMFILE and friends: the pending connection stays queued; try again shortly.
            Log.warning("accept failed: \(error)")
            loop.unwatch(fd, "the listening socket")
            loop.schedule(after: .milliseconds(100)) { [weak self] in self?.resume() }
        }
    }

    // MARK: dialing

    /// `--connect`: dial without blocking; retry with backoff until the host answers.
    private func dial(_ address: Address) {
        guard !closed else { return }
        do {
            let (fd, isConnected) = try NonBlockingConnect.start(address).release()
            if isConnected {
                reconnectDelayMs = 100
                connected(OwnedFD(adopting: fd))
                return
            }
            dialing = OwnedFD(adopting: fd)
            do {
                try loop.watch(fd, events: EventLoop.writable) { [unowned self] _ in dialFinished(address) }
            } catch {
                dialing = nil
                redial(address, after: "cannot wait for the connection: \(error)")
            }
        } catch {
            redial(address, after: error.description)
        }
    }

    private func dialFinished(_ address: Address) {
        guard let fd = dialing?.raw else { return }
        loop.unwatch(fd, "the connection being dialed")
        if let error = NonBlockingConnect.result(of: fd) {
            dialing = nil
            redial(address, after: "\(address): \(error)")
        } else {
            reconnectDelayMs = 100
            if let stream = dialing.take() { connected(stream) }
        }
    }

    private func redial(_ address: Address, after problem: String) {
        if reconnectDelayMs >= 1600 { Log.warning("cannot connect: \(problem); retrying") }
        let delay = reconnectDelayMs
        reconnectDelayMs = min(reconnectDelayMs * 2, 5000)
        loop.schedule(after: .milliseconds(Int64(delay))) { [weak self] in self?.dial(address) }
    }
}
