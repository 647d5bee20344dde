#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// Waits for a freshly started agent to say hello on its socket.
///
/// The probe connects, sends its own hello (each side sends at once), reads frames
/// until the agent's hello, and closes; the agent then takes the next connection (the relay's).
/// Connection refusals, resets and EOF before the hello are retried with a capped backoff: a
/// namespace agent is still starting, and libkrun accepts the host's connection before the guest
/// listens. Waiting is on an epoll `EventLoop` (`wait(fds:timeoutMs:)`), watching the socket,
/// the sandbox's pidfd (it may exit first) and an abort descriptor (the supervisor's
/// signalfd), never a busy loop.
public enum Handshake {
    public enum Outcome {
        case hello(Hello)
        /// The sandbox's process exited (its pidfd became readable) first.
        case exited
        /// The agent answered with an error frame instead of its hello.
        case refused(ErrorMessage)
        /// The abort descriptor became readable.
        case aborted
        case timedOut(lastError: Errno?)
    }

    public static func waitForAgent(socketPath: String, pidfd: CInt, abortFD: CInt? = nil,
                                    deadlineNs: UInt64) -> Outcome {
        var backoffMs: Int32 = 5
        var lastError: Errno?
        while true {
            let now = Clock.monotonicNs()
            guard now < deadlineNs else { return .timedOut(lastError: lastError) }
            switch attempt(socketPath: socketPath, pidfd: pidfd, abortFD: abortFD, deadlineNs: deadlineNs) {
            case .done(let outcome):
                return outcome
            case .retry(let error):
                lastError = error
                // Sleep by polling the pidfd, so an exit ends the wait at once.
                let remaining = Int32(clamping: (deadlineNs - min(deadlineNs, Clock.monotonicNs())) / 1_000_000)
                switch wait(fds: [pidfd, abortFD ?? -1], timeoutMs: min(backoffMs, remaining)) {
                case 0: return .exited
                case 1: return .aborted
                default: break
                }
                backoffMs = min(backoffMs * 2, 200)
            }
        }
    }

    private enum Attempt {
        case done(Outcome)
        case retry(Errno?)
    }

    private static func attempt(socketPath: String, pidfd: CInt, abortFD: CInt?, deadlineNs: UInt64) -> Attempt {
        do {
            let socket = try Socket.connect(.unix(path: socketPath))
            return exchange(socket.raw, pidfd: pidfd, abortFD: abortFD, deadlineNs: deadlineNs)
        } catch {
            return .retry(error.errno)
        }
    }

    /// Sends our hello on a connected socket and reads until the agent's.
    private static func exchange(_ socket: CInt, pidfd: CInt, abortFD: CInt?, deadlineNs: UInt64) -> Attempt {
        var encoder = FrameEncoder()
        encoder.append(id: 0, Hello(role: .relay, name: "tether-supervisor", pid: getpid()))
        if let error = encoder.withPendingBytes({ sendAll(socket, $0) }) { return .retry(error) }

        var decoder = FrameDecoder()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let remaining = Int32(clamping: (deadlineNs - min(deadlineNs, Clock.monotonicNs())) / 1_000_000)
            if remaining == 0 { return .done(.timedOut(lastError: nil)) }
            switch wait(fds: [pidfd, abortFD ?? -1, socket], timeoutMs: remaining) {
            case 0: return .done(.exited)
            case 1: return .done(.aborted)
            case 2: break
            default: return .done(.timedOut(lastError: nil))
            }
            let n = Glibc.read(socket, &buffer, buffer.count)
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return .retry(.current)
            }
            if n == 0 { return .retry(.connectionReset) }   // accepted, then closed
            decoder.append(buffer[0..<n])
            do {
                guard let frame = try decoder.next() else { continue }
                if frame.kind == .hello, let hello = try? frame.decode(Hello.self) { return .done(.hello(hello)) }
                if frame.kind == .error, let error = try? frame.decode(ErrorMessage.self) { return .done(.refused(error)) }
                return .done(.refused(ErrorMessage(code: .protocolViolation,
                                                   message: "the agent's first frame was \(frame.kind), not hello")))
            } catch {
                return .done(.refused(ErrorMessage(code: .framing, message: "the agent sent an invalid frame: \(error.description)")))
            }
        }
    }

    /// Writes everything with send(2) MSG_NOSIGNAL: a peer that already closed gives EPIPE, not
    /// SIGPIPE. Returns the error, nil when all was sent.
    static func sendAll(_ fd: CInt, _ bytes: UnsafeRawBufferPointer) -> Errno? {
        var offset = 0
        while offset < bytes.count {
            let n = send(fd, bytes.baseAddress! + offset, bytes.count - offset, CInt(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                return .current
            }
            offset += n
        }
        return nil
    }

    /// Waits until one of `fds` is readable (or hung up), on an epoll `EventLoop` like every
    /// other wait on the host. Returns the index of the first ready descriptor (the lowest when
    /// several are ready at once), or -1 on timeout or when no loop can be set up (the callers
    /// treat both as "nothing happened in time"). A negative `timeoutMs` waits without a
    /// deadline; negative descriptors are skipped.
    static func wait(fds: [CInt], timeoutMs: Int32) -> Int {
        guard let loop = try? EventLoop() else { return -1 }
        var ready = -1
        var watched: [CInt] = []
        // Handlers hold the loop unowned: the loop owns them, and goes when this returns.
        defer { for fd in watched { loop.unwatch(fd) } }
        for (index, fd) in fds.enumerated() where fd >= 0 {
            do {
                try loop.watch(fd, events: EventLoop.readable) { [unowned loop] _ in
                    ready = ready < 0 ? index : min(ready, index)
                    loop.stopping = true
                }
            } catch {
                return -1
            }
            watched.append(fd)
        }
        if timeoutMs >= 0 {
            loop.schedule(after: .milliseconds(Int(timeoutMs))) { [unowned loop] in loop.stopping = true }
        }
        do { try loop.run() } catch { return -1 }
        return ready
    }
}
