import TetherPosix
import TetherProtocol

/// What the client links report to the relay's router.
protocol ClientLinksDelegate: AnyObject {
    /// A frame from a client (the view is valid only during the call).
    func clientFrame(_ view: FrameView, from client: ClientLink)
    /// The client is closed and unwatched; its sessions are still in `client.sessions`.
    func clientClosed(_ client: ClientLink, reason: String)
}

/// Every client connection: watching, reading in fair turns, writing, and pausing input when
/// the agent or the client itself is backed up. Knows nothing of sessions: frames go to the
/// delegate (the router), and so does a client's end.
///
/// Owns the `ClientLink`s (and through them their sockets). Touched only by the relay's loop
/// thread.
final class ClientLinks {
    private let loop: EventLoop
    private let diagnose: @Sendable (String) -> Void
    weak var delegate: ClientLinksDelegate?
    private(set) var all: [CInt: ClientLink] = [:]
    private var serial: UInt64 = 0
    private var dirty: [ClientLink] = []
    private var flushScheduled = false
    /// Clients with more frames than a turn, served round robin after each pass of the loop.
    private var busy: [ClientLink] = []
    private var busyServiceScheduled = false
    /// The agent's queue is over its high-water mark: no client is read.
    private(set) var agentBackpressure = false

    /// A client's unread output past which the relay stops reading from it, and where it
    /// starts again. Session output alone stays far below: each session's window is 256 KiB.
    static let highWater = 16 << 20
    static let lowWater = 4 << 20
    /// One client's turn: at most this many frames handled and bytes read before the other
    /// ready descriptors get theirs. A budget in bytes alone is not enough: 1 MiB of 10-byte
    /// garbage frames kept everybody else waiting for tens of milliseconds.
    static let framesPerTurn = 64
    static let bytesPerTurn = 256 << 10
    /// Frames handled for all busy clients together per pass of the loop, so that a hundred
    /// flooding connections cost the others no more than one does.
    static let busyFramesPerPass = 256
    /// Below this many bytes read in a turn a client counts as quiet (see `turn`).
    static let quietReadBytes = 16 << 10

    init(loop: EventLoop, diagnostics: @escaping @Sendable (String) -> Void) {
        self.loop = loop
        self.diagnose = diagnostics
    }

    var count: Int { all.count }

    // MARK: taking a client in

    /// Watches a new client and queues `hello` to it; nil when it cannot be watched.
    func add(_ socket: FrameSocket, hello: Hello) -> ClientLink? {
        serial += 1
        let client = ClientLink(socket: socket, loop: loop, serial: serial)
        do {
            try client.watch { [unowned self, weak client] events in
                guard let client else { return }
                clientEvent(client, events: events)
            }
        } catch {
            return nil
        }
        all[client.fd] = client
        client.socket.encoder.append(id: 0, hello)
        if agentBackpressure { pauseInput(client, forAgent: true) }
        markDirty(client)
        return client
    }

    // MARK: writing

    func send<M: Message>(_ client: ClientLink, id: UInt32, flags: FrameFlags = [], _ message: M) {
        guard !client.closed else { return }
        client.socket.encoder.append(id: id, flags: flags, message)
        markDirty(client)
    }

    /// An `error` frame: the one place where the relay's refusals become frames. On a
    /// session's id it carries END, which ends the session for the client.
    func refuse(_ client: ClientLink, id: UInt32, _ refusal: RelayRefusal) {
        let channel = refusal.onControlChannel ? 0 : id
        send(client, id: channel, flags: channel == 0 ? [] : .end, refusal.message)
    }

    /// Queues a frame from the agent, byte for byte, with the client's id for the session.
    func forward(_ encoded: UnsafeRawBufferPointer, to client: ClientLink, id: UInt32) {
        let offset = client.socket.encoder.pendingBytes
        client.socket.encoder.append(encoded: encoded)
        client.socket.encoder.rewriteID(ofFrameAt: offset, to: id)
        markDirty(client)
    }

    /// The client has bytes queued: they are flushed after this batch of events.
    func markDirty(_ client: ClientLink) {
        guard !client.closed else { return }
        dirty.append(client)
        guard !flushScheduled else { return }
        flushScheduled = true
        loop.soon { [unowned self] in flushDirty() }
    }

    private func flushDirty() {
        flushScheduled = false
        let clients = dirty
        dirty.removeAll(keepingCapacity: true)
        for client in clients where !client.closed { flush(client) }
    }

    func flush(_ client: ClientLink) {
        do { try client.flush() } catch {
            close(client, reason: error.description)
            return
        }
        if client.pausedForBacklog && client.socket.encoder.pendingBytes < Self.lowWater {
            resumeInput(client, forAgent: false)
        }
    }

    /// Writes out what is queued as far as each socket takes it without waiting (stopping).
    func flushAll() {
        for client in Array(all.values) { flush(client) }
    }

    // MARK: pausing input

    /// The agent's queue crossed its high-water mark (true) or fell below its low one.
    func setAgentBackpressure(_ on: Bool) {
        guard on != agentBackpressure else { return }
        agentBackpressure = on
        for client in all.values {
            if on { pauseInput(client, forAgent: true) } else if client.pausedForAgent { resumeInput(client, forAgent: true) }
        }
    }

    private func pauseInput(_ client: ClientLink, forAgent: Bool) {
        let wasPaused = client.inputPaused
        if forAgent { client.pausedForAgent = true } else { client.pausedForBacklog = true }
        if !wasPaused { updateInterest(client) }
    }

    private func resumeInput(_ client: ClientLink, forAgent: Bool) {
        if forAgent { client.pausedForAgent = false } else { client.pausedForBacklog = false }
        guard !client.inputPaused else { return }
        // Frames already read into the decoder raise no readiness of their own.
        makeBusy(client)
    }

    private func updateInterest(_ client: ClientLink) {
        guard !client.closed else { return }
        do { try client.updateInterest() } catch { close(client, reason: error.description) }
    }

    // MARK: reading

    private func clientEvent(_ client: ClientLink, events: UInt32) {
        if events & EventLoop.writable != 0 { flush(client) }
        guard !client.closed, !client.inputPaused, !client.busy,
              events & (EventLoop.readable | EventLoop.peerClosed | EventLoop.hangUp | EventLoop.error) != 0 else { return }
        if turn(client).moreWaiting { makeBusy(client) }
    }

    /// Handles up to a turn's frames of a client, reading its socket once what was read before
    /// is handled (so the decoder never holds more than a turn's bytes). `moreWaiting`: frames
    /// are left in the decoder, or a hang-up is not handled yet; neither raises readiness.
    private func turn(_ client: ClientLink) -> (moreWaiting: Bool, frames: Int) {
        var budget = Self.framesPerTurn
        guard handleBufferedFrames(client, budget: &budget) else { return (false, Self.framesPerTurn - budget) }
        if budget == 0 { return (true, Self.framesPerTurn) }
        let outcome = client.socket.read(chunk: 64 << 10, limit: Self.bytesPerTurn)
        guard handleBufferedFrames(client, budget: &budget) else { return (false, Self.framesPerTurn - budget) }
        let frames = Self.framesPerTurn - budget
        if outcome.closed && budget > 0 {
            close(client, reason: outcome.failure.map { "read failed: \($0)" } ?? "disconnected")
            return (false, frames)
        }
        if client.socket.decoder.bufferedBytes == 0 && outcome.bytes < Self.quietReadBytes {
            // A quiet client (requests, acks, typed keys) holds no read buffer between turns:
            // each read reserves a 64 KiB chunk, and thousands of idle clients that once sent
            // a hello would otherwise pin 64 KiB each. Streaming clients keep theirs.
            client.socket.decoder = FrameDecoder()
        } else {
            client.socket.decoder.releaseStorageIfIdle()
        }
        if client.socket.encoder.pendingBytes > Self.highWater {
            pauseInput(client, forAgent: false)
            return (false, frames)
        }
        // Bytes left in the socket need no queue: the descriptor is level-triggered.
        return (budget == 0 || outcome.closed, frames)
    }

    /// Handles frames the decoder holds until it runs dry or the budget is spent. False when
    /// the client was closed (a framing error, or a frame that ended it).
    private func handleBufferedFrames(_ client: ClientLink, budget: inout Int) -> Bool {
        guard !client.closed else { return false }
        do {
            budget -= try client.handleFrames(budget: budget) { view in
                delegate?.clientFrame(view, from: client)
                return !client.closed
            }
        } catch {
            refuse(client, id: 0, RelayRefusal(.framing, error.description))
            flush(client)
            close(client, reason: "framing error: \(error.description)")
        }
        return !client.closed
    }

    /// Puts a client in the queue of busy clients, served after each pass of the loop.
    private func makeBusy(_ client: ClientLink) {
        guard !client.busy, !client.closed else { return }
        client.busy = true
        updateInterest(client)
        busy.append(client)
        scheduleBusyService()
    }

    private func scheduleBusyService() {
        guard !busyServiceScheduled else { return }
        busyServiceScheduled = true
        loop.afterReadyEvents { [unowned self] in serveBusyClients() }
    }

    /// One pass over the busy clients, round robin, within `busyFramesPerPass`; those with more
    /// go back to the end of the queue for the next pass, after everyone else's events.
    private func serveBusyClients() {
        busyServiceScheduled = false
        var spent = 0
        var turns = busy.count
        while spent < Self.busyFramesPerPass && turns > 0 && !busy.isEmpty {
            turns -= 1
            let client = busy.removeFirst()
            var more = false
            if !client.closed && !client.inputPaused {
                let turn = turn(client)
                spent += max(turn.frames, 1)
                more = turn.moreWaiting && !client.closed && !client.inputPaused
            }
            if more {
                busy.append(client)
            } else {
                client.busy = false
                updateInterest(client)
            }
        }
        if !busy.isEmpty { scheduleBusyService() }
    }

    // MARK: closing

    /// Closes a client and tells the delegate, which ends or keeps its sessions.
    func close(_ client: ClientLink, reason: String) {
        guard !client.closed else { return }
        client.closed = true
        all[client.fd] = nil
        if let failure = client.close() { diagnose("unwatching \(client.label): \(failure)") }
        delegate?.clientClosed(client, reason: reason)
        client.sessions.removeAll()
    }
}
