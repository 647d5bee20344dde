#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// The relay's ports room: the exposed ports (one listening socket each on the host), the
/// tunnelled connections they accepted, and the requests that manage them (`exposePort`,
/// `unexposePort`, `listPorts`, answered by the relay itself).
///
/// Each accepted host connection gets a connection of its own to the agent's tunnel endpoint
/// (`TunnelDial`), then a `StreamBridge`: tunnelled bytes never share the agent's framed
/// connection, so exec traffic never waits behind them, nor they behind it.
///
/// Owns the listeners, the dials and the bridges; lives on the relay's loop thread (nothing
/// here blocks: every socket is nonblocking); ends with `closeAll()` when the relay stops.
/// The list is kept in `ports.json` (`PortsFile`) so that a restarted relay listens again.
final class PortForwards {
    /// Each direction of a bridge holds at most this much beside the sockets' own buffers.
    static let bridgeBufferBytes = 128 << 10

    private let loop: EventLoop
    private let tunnel: Address?
    private let file: PortsFile?
    private let clients: ClientLinks
    private let diagnose: (String) -> Void
    private var ports: [UInt16: ExposedPort] = [:]
    /// Guest ports whose expose is waiting for the agent's probe.
    private var pending: Set<UInt16> = []
    private var dials: [ObjectIdentifier: TunnelDial] = [:]
    private var bridges: [ObjectIdentifier: StreamBridge] = [:]
    private var nextRequest: UInt64 = 1

    init(loop: EventLoop, tunnel: Address?, file: PortsFile?, clients: ClientLinks, diagnose: @escaping (String) -> Void) {
        self.loop = loop
        self.tunnel = tunnel
        self.file = file
        self.clients = clients
        self.diagnose = diagnose
    }

    /// Tunnelled connections open now (being opened, or carrying bytes).
    var openTunnels: Int { dials.count + bridges.count }

    // MARK: requests

    func expose(_ view: FrameView, from client: ClientLink) throws(RelayRefusal) {
        let request: ExposePort
        do { request = try ExposePort(cbor: view.payload) } catch { throw RelayRefusal(.badPayload, "exposePort: \(error.description)") }
        guard let tunnel else { throw RelayRefusal(.unknownKind, "this relay has no tunnel endpoint to its agent (tether relay --tunnel)") }
        let guestPort = try Self.checkedPort(request.guestPort, side: "guest", allowZero: false)
        let hostPort = try Self.checkedPort(request.hostPort ?? 0, side: "host", allowZero: true)
        let addressText = request.hostAddress ?? "127.0.0.1"
        guard let hostAddress = IPAddress(parsing: addressText) else {
            throw RelayRefusal(.badPayload, "exposePort: hostAddr '\(addressText)' is not a numeric IPv4 or IPv6 address")
        }
        if let existing = ports[guestPort] {
            throw RelayRefusal(.portAlreadyExposed, "guest port \(guestPort) is exposed already on \(existing.info.hostEndpoint)"
                               + (existing.info.name.map { " (name \($0))" } ?? "") + "; unexpose it first")
        }
        guard !pending.contains(guestPort) else {
            throw RelayRefusal(.portAlreadyExposed, "guest port \(guestPort) is being exposed by another request")
        }
        let id = view.header.id
        let bind = { [unowned self, unowned client] in
            do throws(RelayRefusal) {
                let port = try listen(PortInfo(guestPort: guestPort, hostAddress: hostAddress.description, hostPort: hostPort,
                                               name: request.name), address: hostAddress)
                save()
                clients.send(client, id: id, flags: .end, PortExposed(port: port.report))
            } catch {
                clients.refuse(client, id: id, error)
            }
        }
        guard request.check else { return bind() }
        pending.insert(guestPort)
        let dial = TunnelDial(loop: loop, address: tunnel, open: TunnelOpen(guestPort: guestPort, request: takeRequestNumber(), probe: true))
        let key = ObjectIdentifier(dial)
        dials[key] = dial
        dial.onAnswer = { [unowned self, unowned client] answer in
            dials[key] = nil
            pending.remove(guestPort)
            _ = dial.takeConnection()   // a probe carries nothing: close it
            switch answer {
            case .opened: bind()
            case .refused(let refusal): clients.refuse(client, id: id, refusal)
            }
        }
        dial.start()
    }

    func unexpose(_ view: FrameView, from client: ClientLink) throws(RelayRefusal) {
        let request: UnexposePort
        do { request = try UnexposePort(cbor: view.payload) } catch { throw RelayRefusal(.badPayload, "unexposePort: \(error.description)") }
        let guestPort = try Self.checkedPort(request.guestPort, side: "guest", allowZero: false)
        guard let port = ports.removeValue(forKey: guestPort) else {
            throw RelayRefusal(.portNotExposed, "guest port \(guestPort) is not exposed" + (ports.isEmpty ? "" : " (exposed: \(ports.keys.sorted().map(String.init).joined(separator: ", ")))"))
        }
        // Connections already carried go on until they end; the listener stops taking new ones.
        port.close(on: loop)
        save()
        clients.send(client, id: view.header.id, flags: .end, Done())
    }

    func list(_ view: FrameView, from client: ClientLink) throws(RelayRefusal) {
        do { _ = try ListPorts(cbor: view.payload) } catch { throw RelayRefusal(.badPayload, "listPorts: \(error.description)") }
        let list = ports.keys.sorted().compactMap { ports[$0]?.report }
        clients.send(client, id: view.header.id, flags: .end, PortList(ports: list))
    }

    /// 1-65535 (0 only for a host port: the kernel picks one).
    static func checkedPort(_ value: UInt32, side: String, allowZero: Bool) throws(RelayRefusal) -> UInt16 {
        if value == 0 && !allowZero {
            throw RelayRefusal(.invalidPort, "\(side) port 0 is not a port: give 1-65535")
        }
        guard value <= 65535 else {
            throw RelayRefusal(.invalidPort, "\(side) port \(value) is above 65535, the largest TCP port")
        }
        return UInt16(value)
    }

    // MARK: listening

    /// Binds the host side and starts accepting. EADDRINUSE is `portInUse`; EACCES is a port
    /// below the host's unprivileged range (net.ipv4.ip_unprivileged_port_start), reserved
    /// for privileged processes.
    private func listen(_ info: PortInfo, address: IPAddress) throws(RelayRefusal) -> ExposedPort {
        let socket: OwnedFD
        do { socket = try InternetSocket.listen(address, port: info.hostPort) } catch {
            switch error.errno?.rawValue {
            case EADDRINUSE:
                throw RelayRefusal(.portInUse, "\(info.hostEndpoint) is in use on the host; pick another --host-port", errno: EADDRINUSE)
            case EACCES:
                throw RelayRefusal(.invalidPort, "host port \(info.hostPort) is reserved: ports below the host's "
                                   + "net.ipv4.ip_unprivileged_port_start need privileges the relay does not have", errno: EACCES)
            case EADDRNOTAVAIL:
                throw RelayRefusal(.badPayload, "host address \(info.hostAddress) is not an address of this host", errno: EADDRNOTAVAIL)
            case let code:
                throw RelayRefusal(.internal, "listening on \(info.hostEndpoint): \(error)", errno: code)
            }
        }
        var bound = info
        bound.hostPort = InternetSocket.localPort(socket.raw) ?? info.hostPort
        let fd = socket.raw
        let port = ExposedPort(info: bound, listener: socket)
        do {
            try loop.watch(fd, events: EventLoop.readable) { [unowned self, unowned port] _ in accept(port) }
        } catch {
            port.close(on: loop)
            throw RelayRefusal(.internal, "watching \(bound.hostEndpoint): \(error)", errno: error.rawValue)
        }
        ports[bound.guestPort] = port
        return port
    }

    /// After a restart: listen again on every saved port. One that cannot be bound stays in
    /// the list, not listening, with the reason (`port ls` shows it).
    func restore() {
        guard let file else { return }
        let entries: [PortsFile.Entry]
        do { entries = try file.load() } catch { return diagnose("ports: \(error)") }
        for entry in entries where ports[entry.guestPort] == nil {
            let info = PortInfo(guestPort: entry.guestPort, hostAddress: entry.hostAddr, hostPort: entry.hostPort, name: entry.name)
            guard let address = IPAddress(parsing: entry.hostAddr), entry.guestPort != 0 else {
                diagnose("ports: \(file.path): skipping an entry with host address '\(entry.hostAddr)' and guest port \(entry.guestPort)")
                continue
            }
            do { _ = try listen(info, address: address) } catch {
                var lost = info
                lost.listening = false
                lost.problem = "\(error.code): \(error.text)"
                ports[entry.guestPort] = ExposedPort(info: lost, listener: nil)
                diagnose("ports: cannot listen on \(info.hostEndpoint) again: \(error.text)")
            }
        }
        if !entries.isEmpty { diagnose("ports: \(entries.count) exposed port(s) restored from \(file.path)") }
    }

    private func save() {
        guard let file else { return }
        let entries = ports.keys.sorted().compactMap { ports[$0]?.entry }
        do { try file.save(entries) } catch { diagnose("ports: \(error)") }
    }

    private func takeRequestNumber() -> UInt64 {
        defer { nextRequest &+= 1 }
        return nextRequest
    }

    // MARK: tunnelled connections

    private func accept(_ port: ExposedPort) {
        guard let listener = port.listenerFD, let tunnel else { return }
        while true {
            let connection: OwnedFD?
            do { connection = try Socket.accept(listener) } catch {
                // EMFILE and friends: leave it queued, look again shortly rather than spin.
                diagnose("ports: accepting on \(port.info.hostEndpoint): \(error)")
                loop.unwatch(listener)
                loop.schedule(after: .milliseconds(100)) { [weak self, weak port] in
                    guard let self, let port, let fd = port.listenerFD, !loop.isWatching(fd) else { return }
                    try? loop.watch(fd, events: EventLoop.readable) { [unowned self, unowned port] _ in self.accept(port) }
                }
                return
            }
            guard let connection else { return }
            port.connections += 1
            open(connection, port: port, tunnel: tunnel)
        }
    }

    private func open(_ connection: consuming OwnedFD, port: ExposedPort, tunnel: Address) {
        let number = takeRequestNumber()
        let dial = TunnelDial(loop: loop, address: tunnel, open: TunnelOpen(guestPort: port.info.guestPort, request: number))
        let key = ObjectIdentifier(dial)
        dials[key] = dial
        let client = SharedSocket(connection)
        dial.onAnswer = { [unowned self, weak port] answer in
            dials[key] = nil
            switch answer {
            case .opened(_, let leftover):
                guard let tunnelSocket = dial.takeConnection(), let host = client.take() else { return }
                bridge(tunnelSocket, host, leftover: leftover, request: number)
            case .refused(let refusal):
                port?.refusals += 1
                port?.lastRefusal = "\(refusal.code): \(refusal.text)"
                // The host client sees a reset, as from a port nobody listens on.
                if let host = client.take() { Self.reset(host) }
            }
        }
        dial.start()
    }

    private func bridge(_ tunnel: consuming OwnedFD, _ host: consuming OwnedFD, leftover: [UInt8], request: UInt64) {
        // First side the tunnel: what the agent sent behind its answer goes to the host first.
        let bridge = StreamBridge(loop: loop, tunnel, host, bufferBytes: Self.bridgeBufferBytes)
        let key = ObjectIdentifier(bridge)
        bridges[key] = bridge
        bridge.onEnd = { [unowned self] _ in
            loop.soon { [weak self] in self?.bridges[key] = nil }
        }
        do { try bridge.start(initialForward: leftover) } catch {
            diagnose("ports: tunnel \(request): cannot watch its sockets: \(error)")
            bridge.close()
            bridges[key] = nil
        }
    }

    /// SO_LINGER with a zero timeout: close(2) sends RST instead of FIN.
    private static func reset(_ socket: consuming OwnedFD) {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(socket.raw, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
    }

    /// Closes every listener, dial and tunnel (the relay is stopping). ports.json stays: the
    /// next relay of this sandbox listens again.
    func closeAll() {
        for port in ports.values { port.close(on: loop) }
        for dial in dials.values { dial.cancel() }
        for bridge in bridges.values { bridge.close() }
        ports = [:]
        dials = [:]
        bridges = [:]
    }
}

/// A noncopyable descriptor held by a closure until one of its branches takes it.
private final class SharedSocket {
    private var socket: OwnedFD?
    init(_ socket: consuming OwnedFD) { self.socket = Optional(socket) }
    func take() -> OwnedFD? { socket.take() }
}
