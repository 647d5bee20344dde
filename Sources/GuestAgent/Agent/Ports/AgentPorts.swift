#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// The agent's ports room: the tunnel endpoint (`--tunnel ADDR`), a listening socket separate
/// from the framed connection, so that a busy tunnel never queues behind exec traffic or the
/// other way round. Every connection on it is one tunnelled TCP connection (or one probe):
/// a `TunnelRequest` until it is answered, then a `StreamBridge` between the tunnel and the
/// guest's service until both directions end.
///
/// Owns the listener, the requests being answered and the bridges; lives on the agent's loop
/// thread; ends with `close()` (the agent stopping), which closes every tunnel.
final class AgentPorts {
    /// Tunnelled connections at once at most; the next one is refused with `limitReached`.
    static let maxTunnels = 1024
    /// Each direction of a bridge holds at most this much; the sockets' own buffers hold more.
    static let bridgeBufferBytes = 64 << 10

    private let loop: EventLoop
    private let address: Address?
    private var listener: OwnedFD?
    private var requests: [ObjectIdentifier: TunnelRequest] = [:]
    private var bridges: [ObjectIdentifier: StreamBridge] = [:]

    init(loop: EventLoop, address: Address?) {
        self.loop = loop
        self.address = address
    }

    /// Tunnels and requests open now.
    var openCount: Int { requests.count + bridges.count }

    /// Listens on the tunnel endpoint; without `--tunnel` there is none and ports cannot be
    /// reached (the relay says so when it cannot dial).
    func open() throws(BootError) {
        guard let address else { return }
        do {
            if case .fd(let fd) = address {
                guard fcntl(fd, F_GETFD) >= 0 else {
                    throw BootError(stage: "tunnel", errno: EBADF, message: "--tunnel fd:\(fd): descriptor \(fd) is not open")
                }
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                guard Socket.isListening(fd) else {
                    throw BootError(stage: "tunnel", errno: EINVAL, message: "--tunnel fd:\(fd) is not a listening socket")
                }
            }
            let socket = try Socket.listen(address)
            try socket.setNonBlocking()
            let fd = socket.raw
            listener = consume socket
            try loop.watch(fd, events: EventLoop.readable) { [unowned self] _ in acceptPending() }
        } catch let error as BootError {
            throw error
        } catch let error as SocketError {
            throw BootError(stage: "tunnel", errno: error.errno?.rawValue ?? 0, message: "cannot listen on \(address): \(error)")
        } catch {
            throw BootError(stage: "tunnel", errno: (error as? Errno)?.rawValue ?? 0, message: "tunnel endpoint \(address): \(error)")
        }
    }

    func close() {
        if let fd = listener?.raw { loop.unwatch(fd, "the tunnel endpoint") }
        listener = nil
        for request in requests.values { request.cancel() }
        for bridge in bridges.values { bridge.close() }
        requests = [:]
        bridges = [:]
    }

    private func acceptPending() {
        guard let fd = listener?.raw else { return }
        while true {
            let stream: OwnedFD?
            do { stream = try Socket.accept(fd) } catch {
                // EMFILE and friends: the connection stays queued; pause rather than spin.
                Log.warning("tunnel: accept failed: \(error)")
                loop.unwatch(fd, "the tunnel endpoint")
                loop.schedule(after: .milliseconds(100)) { [weak self] in self?.rewatch() }
                return
            }
            guard let stream else { return }
            if openCount >= Self.maxTunnels {
                let refusal = ErrorMessage(code: .limitReached, message: "the agent carries \(Self.maxTunnels) tunnelled connections already")
                try? FileIO.writeAll(stream.raw, TunnelPreamble.encode(refusal))
                continue
            }
            let request = TunnelRequest(loop: loop, tunnel: stream)
            let key = ObjectIdentifier(request)
            requests[key] = request
            request.onDone = { [unowned self] in requests[key] = nil }
            request.onConnected = { [unowned self] tunnel, service, number in
                requests[key] = nil
                bridge(tunnel, service, request: number)
            }
            request.start()
        }
    }

    private func rewatch() {
        guard let fd = listener?.raw, !loop.isWatching(fd) else { return }
        do { try loop.watch(fd, events: EventLoop.readable) { [unowned self] _ in acceptPending() } } catch {
            Log.warning("tunnel: cannot watch the endpoint: \(error); retrying")
            loop.schedule(after: .milliseconds(100)) { [weak self] in self?.rewatch() }
        }
    }

    private func bridge(_ tunnel: consuming OwnedFD, _ service: consuming OwnedFD, request: UInt64) {
        let bridge = StreamBridge(loop: loop, tunnel, service, bufferBytes: Self.bridgeBufferBytes)
        let key = ObjectIdentifier(bridge)
        bridges[key] = bridge
        bridge.onEnd = { [unowned self] ending in
            if case .failed(let operation, let error) = ending {
                Log.info("tunnel \(request): ended by \(operation): \(error)")
            }
            // Not from inside the bridge's own call: it is still on the stack.
            loop.soon { [weak self] in self?.bridges[key] = nil }
        }
        do { try bridge.start() } catch {
            Log.warning("tunnel \(request): cannot watch its sockets: \(error)")
            bridge.close()
            bridges[key] = nil
        }
    }
}
