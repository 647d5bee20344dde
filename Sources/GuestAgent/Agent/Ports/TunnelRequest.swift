#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// One connection on the tunnel endpoint before it carries bytes: read the relay's
/// `tunnelOpen`, then either answer a probe (what listens on the port) or connect to the
/// guest's service, trying each address of `GuestAddresses.connectOrder()` in turn, and
/// answer `tunnelOpened` or a typed refusal.
///
/// Owns the tunnel connection and the guest connection being dialled; lives on the agent's
/// loop thread; ends by handing both to `onConnected` (success) or closing them and calling
/// `onDone`. The relay sends nothing after its preamble until it has the answer, so closing
/// after a refusal loses nothing it sent.
final class TunnelRequest {
    /// How long the relay has to send its preamble, and each guest address to accept.
    static let preambleTimeout = Duration.seconds(10)
    static let connectTimeout = Duration.seconds(3)

    private let loop: EventLoop
    private var tunnel: OwnedFD?
    private var received: [UInt8] = []
    private var dialing: OwnedFD?
    private var order: [IPAddress] = []
    private var attempts: [String] = []
    private var open: TunnelOpen?
    private var timer: TimerID?
    private var finished = false
    /// Connected: the tunnel, the guest connection, and what to say about it.
    var onConnected: (_ tunnel: consuming OwnedFD, _ service: consuming OwnedFD, _ request: UInt64) -> Void = { _, _, _ in }
    /// Ended without a bridge (refused, probed, or the relay went away).
    var onDone: () -> Void = {}

    init(loop: EventLoop, tunnel: consuming OwnedFD) {
        self.loop = loop
        self.tunnel = Optional(tunnel)
    }

    func start() {
        guard let fd = tunnel?.raw else { return }
        do {
            try loop.watch(fd, events: EventLoop.readable) { [unowned self] _ in preambleReadable() }
        } catch {
            Log.warning("tunnel: cannot watch a new connection: \(error)")
            return finish()
        }
        timer = loop.schedule(after: Self.preambleTimeout) { [weak self] in
            self?.timer = nil
            self?.refuse(RequestError(.protocolViolation, "no tunnelOpen within \(Self.preambleTimeout)"))
        }
    }

    /// Closes everything without answering (the agent is stopping).
    func cancel() { finish() }

    // MARK: the preamble

    private func preambleReadable() {
        guard let fd = tunnel?.raw else { return }
        var chunk = [UInt8](repeating: 0, count: TunnelPreamble.maxBytes)
        let outcome = chunk.withUnsafeMutableBytes { (raw) -> Result<ReadResult, Errno> in
            do throws(Errno) { return .success(try FileIO.read(fd, into: raw)) } catch { return .failure(error) }
        }
        switch outcome {
        case .failure, .success(.endOfFile): return finish()   // the relay gave up
        case .success(.wouldBlock): return
        case .success(.bytes(let count)): received += chunk.prefix(count)
        }
        let decoded: (frame: Frame, consumed: Int)?
        do { decoded = try TunnelPreamble.decode(received[...]) } catch {
            return refuse(RequestError(.framing, error.description))
        }
        guard let (frame, _) = decoded else { return }
        loop.unwatch(fd, "a tunnel connection")
        if let timer { loop.cancel(timer) }
        timer = nil
        guard frame.kind == .tunnelOpen else {
            return refuse(RequestError(.unknownKind, "a tunnel connection opens with tunnelOpen, not \(frame.kind)"))
        }
        let open: TunnelOpen
        do { open = try frame.decode(TunnelOpen.self) } catch {
            return refuse(.badPayload("tunnelOpen", error))
        }
        self.open = open
        if open.probe { return probe(open) }
        order = GuestAddresses.connectOrder()
        dialNext()
    }

    // MARK: probing

    private func probe(_ open: TunnelOpen) {
        let listeners = GuestListeners.current()
        let order = GuestAddresses.connectOrder()
        let onPort = listeners.filter { $0.port == open.guestPort }
        if onPort.contains(where: { GuestAddresses.reaches($0, order: order) }) {
            answer(TunnelOpened(listeners: onPort.map(\.endpoint)))
            return finish()
        }
        refuse(RequestError(.serviceNotResponding, Self.nothingListens(port: open.guestPort, onPort: onPort, all: listeners)))
    }

    /// The hint E2B's users need most: where the service would have to listen.
    static func nothingListens(port: UInt16, onPort: [GuestListeners.Listener], all: [GuestListeners.Listener]) -> String {
        var text = "nothing listens on guest port \(port) on 127.0.0.1, ::1, 0.0.0.0 or ::"
        if !onPort.isEmpty {
            text += " (a listener on \(onPort.map(\.endpoint).joined(separator: ", ")) is bound to an address the agent does not connect to)"
        }
        text += "; start the service bound to 127.0.0.1, ::1 or 0.0.0.0 on port \(port)"
        let others = Set(all.map(\.endpoint)).sorted().prefix(12)
        text += others.isEmpty ? "; nothing listens in the guest at all" : "; listening in the guest: \(others.joined(separator: ", "))"
        return text
    }

    // MARK: connecting

    private func dialNext() {
        guard let open else { return }
        guard !order.isEmpty else {
            return refuse(RequestError(.connectionRefused, "guest port \(open.guestPort): tried \(attempts.joined(separator: ", "))"))
        }
        let address = order.removeFirst()
        do {
            let (fd, isConnected) = try InternetSocket.connect(address, port: open.guestPort).release()
            dialing = OwnedFD(adopting: fd)
            if isConnected { return connected(address) }
            try loop.watch(fd, events: EventLoop.writable) { [unowned self] _ in dialFinished(address) }
            timer = loop.schedule(after: Self.connectTimeout) { [weak self] in
                self?.timer = nil
                self?.attemptFailed(address, "timed out after \(Self.connectTimeout)")
            }
        } catch let error as SocketError {
            attemptFailed(address, error.errno.map { "\($0)" } ?? error.description)
        } catch {
            attemptFailed(address, "\(error)")
        }
    }

    private func dialFinished(_ address: IPAddress) {
        guard let fd = dialing?.raw else { return }
        if let error = NonBlockingConnect.result(of: fd) { return attemptFailed(address, "\(error)") }
        connected(address)
    }

    private func attemptFailed(_ address: IPAddress, _ why: String) {
        guard let open else { return }
        stopDialing()
        attempts.append("\(address.endpoint(port: open.guestPort)) (\(why))")
        dialNext()
    }

    private func stopDialing() {
        if let timer { loop.cancel(timer) }
        timer = nil
        if let fd = dialing?.raw { loop.unwatch(fd, "a guest connection being dialled") }
        dialing = nil
    }

    private func connected(_ address: IPAddress) {
        guard let open else { return }
        if let timer { loop.cancel(timer) }
        timer = nil
        if let fd = dialing?.raw { loop.unwatch(fd, "a guest connection being dialled") }
        answer(TunnelOpened(address: address.endpoint(port: open.guestPort)))
        guard !finished, let service = dialing.take(), let tunnel = tunnel.take() else { return finish() }
        finished = true
        onConnected(tunnel, service, open.request)
    }

    // MARK: answering

    /// The answer is one small frame on a socket nothing was written to yet: it fits in the
    /// send buffer at once.
    private func answer<M: Message>(_ message: M) {
        guard let fd = tunnel?.raw else { return }
        let bytes = TunnelPreamble.encode(message)
        do { try FileIO.writeAll(fd, bytes) } catch {
            Log.info("tunnel: cannot answer the relay: \(error)")
        }
    }

    private func refuse(_ error: RequestError) {
        answer(ErrorMessage(code: error.code, message: error.message, errno: error.errno))
        finish()
    }

    private func finish() {
        guard !finished else { return }
        finished = true
        stopDialing()
        if let fd = tunnel?.raw { loop.unwatch(fd, "a tunnel connection") }
        tunnel = nil
        onDone()
    }
}
