#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

// Taking clients in: the cap (`maxClients`), the descriptor limit, and the log line a second
// that counts whom the relay turned away. A flood of connections costs the relay the work of
// turning each one away and nothing more: it never spins on a listener it cannot serve and
// never writes a line per refusal.
extension Relay {
    /// Connections accepted per readiness of the listener before other descriptors get their
    /// turn: a client connecting as fast as it is refused cannot hold the loop.
    static let acceptsPerTurn = 64

    func watchListener() throws(Errno) {
        try loop.watch(listener, events: EventLoop.readable) { [unowned self] _ in acceptClients() }
    }

    func acceptClients() {
        guard listener >= 0, !admission.listenerResting else { return }
        for _ in 0..<Self.acceptsPerTurn {
            let accepted: OwnedFD?
            do { accepted = try Socket.accept(listener) } catch {
                guard acceptFailed(error) else { return }
                continue
            }
            guard let fd = accepted else { return }
            admission.acceptWorked()
            if clients.count >= configuration.maxClients {
                refuse(fd, .overCap, ErrorMessage(code: .tooManyClients, message:
                    "the relay serves at most \(configuration.maxClients) client\(configuration.maxClients == 1 ? "" : "s") at a time (tether relay --max-clients)"))
            } else {
                admit(fd)
            }
        }
    }

    /// After accept(2) failed: whether to go on accepting in this turn.
    private func acceptFailed(_ error: Errno) -> Bool {
        switch error.rawValue {
        case ECONNABORTED, EPROTO:
            // That connection is gone before it was taken; the next one may be fine.
            return true
        case EMFILE, ENFILE:
            if turnAwayWithSpare(error) { return true }
            rest(after: error)
            return false
        default:
            // ENOMEM, ENOBUFS, or a filter's EPERM: nothing to do but wait a little.
            rest(after: error)
            return false
        }
    }

    /// At the descriptor limit: frees the spare descriptor, accepts the waiting connection on
    /// it, tells the client and closes it, then takes the spare back. False when the spare is
    /// gone or another thread took the freed slot first (the accept failed again).
    private func turnAwayWithSpare(_ error: Errno) -> Bool {
        guard admission.spare >= 0 else { return false }
        admission.closeSpare()
        defer { admission.openSpare() }
        let accepted: OwnedFD?
        do { accepted = try Socket.accept(listener) } catch { return false }
        // nil: the waiting client gave up meanwhile; nothing more is waiting.
        guard let fd = accepted else { return true }
        let limit = descriptorLimit.map { " (\($0))" } ?? ""
        refuse(fd, .descriptorLimit(error), ErrorMessage(code: .tooManyClients, message:
            "the relay is at its descriptor limit\(limit) and takes no more clients now; try again later", errno: error.rawValue))
        return true
    }

    /// Stops watching the listener for a while (growing while the failures go on): waiting
    /// clients stay queued in the backlog, and the loop serves everyone else meanwhile.
    private func rest(after error: Errno) {
        admission.count(.listenerRested(error))
        reportRefusals()
        admission.listenerResting = true
        if let failure = loop.unwatch(listener) { diagnose("unwatching the listener: \(failure)") }
        loop.schedule(after: admission.takeRest()) { [unowned self] in
            admission.listenerResting = false
            guard listener >= 0, !stopping else { return }
            admission.openSpare()
            do { try watchListener() } catch { fail(.setup("watching the listener again: \(error)")) }
        }
    }

    /// A client the relay takes: watched, and greeted with the relay's hello. One it cannot
    /// watch (epoll_ctl failed: ENOMEM, or ENOSPC at max_user_watches) is closed at once.
    private func admit(_ fd: consuming OwnedFD) {
        let socket: FrameSocket
        do { socket = try FrameSocket(adopting: fd) } catch { return }
        _ = clients.add(socket, hello: relayHello())
    }

    /// Tells a client the relay does not take it (one `error` frame on id 0, no hello) and
    /// closes the connection. The frame is small and the socket new, so one nonblocking send
    /// takes all of it; should it not, the client still sees the connection close.
    private func refuse(_ fd: consuming OwnedFD, _ refusal: ClientAdmission.Refusal, _ message: ErrorMessage) {
        var encoder = FrameEncoder()
        encoder.append(id: 0, message)
        _ = encoder.withPendingBytes { bytes in Glibc.send(fd.raw, bytes.baseAddress, bytes.count, CInt(MSG_DONTWAIT | MSG_NOSIGNAL)) }
        // A unix socket closed with the client's hello unread still delivers what was sent
        // before the close: the client reads the error, then end of stream.
        _ = consume fd
        admission.count(refusal)
        reportRefusals()
    }

    /// Writes what was refused since the last line, at most one line a second: at once when a
    /// second has passed since the last, else from a timer when it has.
    func reportRefusals() {
        guard admission.hasUnreported else { return }
        let now = Clock.monotonicNs()
        let due = admission.reportDue(nowNs: now)
        if due.now || stopping {
            if let line = admission.takeReport(nowNs: now, maxClients: configuration.maxClients, descriptorLimit: descriptorLimit) {
                diagnose(line)
            }
            return
        }
        guard !admission.reportScheduled else { return }
        admission.reportScheduled = true
        loop.schedule(atNs: due.atNs) { [unowned self] in
            admission.reportScheduled = false
            reportRefusals()
        }
    }

    /// Said once at start: a descriptor limit below the cap means the limit, not the cap, is
    /// what turns clients away (each costs the relay one descriptor).
    func warnIfDescriptorLimitBelowCap() {
        // Descriptors the relay holds besides its clients: standard streams, epoll, its
        // eventfd and timerfd, the listener, the agent, exec.log, the spare, `logs` readers.
        let ownNeeds: UInt64 = 64
        guard let limit = descriptorLimit, limit < UInt64(configuration.maxClients) + ownNeeds else { return }
        diagnose("the descriptor limit (RLIMIT_NOFILE \(limit)) is below --max-clients \(configuration.maxClients) "
                 + "plus the relay's own needs: clients past it are refused at the descriptor limit (raise ulimit -n, or lower --max-clients)")
    }
}
