#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// The relay's half of opening one tunnel connection: dial the agent's tunnel endpoint,
/// send `tunnelOpen`, and read the agent's answer (`tunnelOpened`, or an `error` with its
/// code). Nothing else is sent until the answer came, so a refusal loses nothing.
///
/// Owns the connection while it is being opened; lives on the relay's loop thread; ends by
/// calling `onAnswer` once, handing over the connection (with any bytes of the guest's service
/// that came right behind the answer) or a refusal.
final class TunnelDial {
    enum Answer {
        case opened(TunnelOpened, leftover: [UInt8])
        case refused(RelayRefusal)
    }

    /// How long the agent has to answer (its own connect attempts are bounded below this).
    static let answerTimeout = Duration.seconds(15)

    private let loop: EventLoop
    private let address: Address
    private let open: TunnelOpen
    private var socket: OwnedFD?
    private var received: [UInt8] = []
    private var timer: TimerID?
    private var done = false
    /// Called once. On `.opened` the connection is handed over in `takeConnection()`.
    var onAnswer: (Answer) -> Void = { _ in }

    init(loop: EventLoop, address: Address, open: TunnelOpen) {
        self.loop = loop
        self.address = address
        self.open = open
    }

    /// The connection, once `onAnswer(.opened)` was called.
    func takeConnection() -> OwnedFD? { socket.take() }

    func start() {
        let progress: NonBlockingConnect.Progress
        do { progress = try NonBlockingConnect.start(address) } catch {
            return answer(.refused(RelayRefusal(.agentNotReady, "cannot reach the agent's tunnel endpoint \(address): \(error)",
                                                errno: error.errno?.rawValue)))
        }
        let (fd, isConnected) = progress.release()
        socket = OwnedFD(adopting: fd)
        timer = loop.schedule(after: Self.answerTimeout) { [weak self] in
            self?.timer = nil
            self?.answer(.refused(RelayRefusal(.agentUnresponsive, "the agent did not answer a tunnel request within \(Self.answerTimeout)")))
        }
        do {
            if isConnected {
                try loop.watch(fd, events: EventLoop.readable) { [unowned self] _ in readable() }
                sendPreamble()
            } else {
                try loop.watch(fd, events: EventLoop.writable) { [unowned self] _ in dialed() }
            }
        } catch {
            answer(.refused(RelayRefusal(.internal, "watching a tunnel connection: \(error)", errno: error.rawValue)))
        }
    }

    /// Ends it without an answer (the port or the relay is going away).
    func cancel() {
        done = true
        release()
    }

    private func dialed() {
        guard let fd = socket?.raw else { return }
        if let error = NonBlockingConnect.result(of: fd) {
            return answer(.refused(RelayRefusal(.agentNotReady, "cannot reach the agent's tunnel endpoint \(address): \(error)",
                                                errno: error.rawValue)))
        }
        loop.unwatch(fd)
        do { try loop.watch(fd, events: EventLoop.readable) { [unowned self] _ in readable() } } catch {
            return answer(.refused(RelayRefusal(.internal, "watching a tunnel connection: \(error)", errno: error.rawValue)))
        }
        sendPreamble()
    }

    /// One small frame on a fresh connection: it fits in the socket's buffer at once.
    private func sendPreamble() {
        guard let fd = socket?.raw else { return }
        do { try FileIO.writeAll(fd, TunnelPreamble.encode(open)) } catch {
            answer(.refused(RelayRefusal(.agentGone, "sending to the agent's tunnel endpoint: \(error)", errno: error.rawValue)))
        }
    }

    private func readable() {
        guard let fd = socket?.raw, !done else { return }
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        let outcome = chunk.withUnsafeMutableBytes { (raw) -> Result<ReadResult, Errno> in
            do throws(Errno) { return .success(try FileIO.read(fd, into: raw)) } catch { return .failure(error) }
        }
        switch outcome {
        case .failure(let error):
            return answer(.refused(RelayRefusal(.agentGone, "reading the agent's tunnel answer: \(error)", errno: error.rawValue)))
        case .success(.endOfFile):
            return answer(.refused(RelayRefusal(.agentGone, "the agent closed the tunnel connection without an answer")))
        case .success(.wouldBlock):
            return
        case .success(.bytes(let count)):
            received += chunk.prefix(count)
        }
        let decoded: (frame: Frame, consumed: Int)?
        do { decoded = try TunnelPreamble.decode(received[...]) } catch {
            return answer(.refused(RelayRefusal(.protocolViolation, "the agent's tunnel answer: \(error)")))
        }
        guard let (frame, consumed) = decoded else { return }
        switch frame.kind {
        case .tunnelOpened:
            guard let opened = try? frame.decode(TunnelOpened.self) else {
                return answer(.refused(RelayRefusal(.protocolViolation, "the agent's tunnelOpened does not decode")))
            }
            answer(.opened(opened, leftover: Array(received[consumed...])))
        case .error:
            guard let error = try? frame.decode(ErrorMessage.self) else {
                return answer(.refused(RelayRefusal(.protocolViolation, "the agent's tunnel error does not decode")))
            }
            answer(.refused(RelayRefusal(error.code, error.message, errno: error.errno)))
        default:
            answer(.refused(RelayRefusal(.protocolViolation, "the agent answered a tunnel request with \(frame.kind)")))
        }
    }

    private func answer(_ answer: Answer) {
        guard !done else { return }
        done = true
        if let timer { loop.cancel(timer) }
        timer = nil
        if let fd = socket?.raw, loop.isWatching(fd) { loop.unwatch(fd) }
        if case .refused = answer { socket = nil }
        // The owner's closure may hold this dial (to take its connection): let go of it once
        // it ran, so the two do not keep each other alive.
        let callback = onAnswer
        onAnswer = { _ in }
        callback(answer)
    }

    private func release() {
        if let timer { loop.cancel(timer) }
        timer = nil
        if let fd = socket?.raw, loop.isWatching(fd) { loop.unwatch(fd) }
        socket = nil
    }
}
