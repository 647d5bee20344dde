import Synchronization
import TetherProtocol

/// What the connection's thread hands a session's reader.
enum ChannelItem: Sendable {
    case event(ExecEvent)
    case attached(Attached)
    /// A reply of a request session (`sessionList`, ...).
    case reply(Frame)
}

/// How a session ended.
enum ChannelEnd: Sendable {
    /// `done` (or the END of a request's reply).
    case done
    /// `detached{session}`: the session goes on without this client.
    case detached(session: UInt32)
    /// `failed`, `error`, or the connection dropped.
    case failed(TetherError)
}

/// One session's inbox, shared between the connection's thread (which fills it) and the
/// tasks reading events or writing stdin (which wait on it with continuations; nothing blocks).
///
/// Holds no descriptors. Lives as long as a handle or the connection refers to it; the
/// connection drops it when the session's END arrives or the connection ends.
final class SessionChannel: Sendable {
    let id: UInt32
    let connection: RelayConnection
    /// For errors: what was being done (`exec`), and about what.
    let operation: String
    let context: [String: String]

    struct State {
        var items: [ChannelItem] = []
        var head = 0
        var end: ChannelEnd?
        var exit: ExitStatus?
        /// Tasks suspended until the next item, the end, or stdin window (see `Slot`).
        var itemWaiters: [CheckedContinuation<Void, Never>] = []
        var endWaiters: [CheckedContinuation<Void, Never>] = []
        /// Output bytes consumed and not yet acked.
        var unacked = 0
        var stdinCredit = Int64(FlowControl.initialWindowBytes)
        var stdinWaiters: [CheckedContinuation<Void, Never>] = []
        var stdinClosed = false
        var eventsTaken = false
        var stdinTaken = false
    }
    let state = Mutex(State())

    init(id: UInt32, connection: RelayConnection, operation: String, context: [String: String]) {
        self.id = id
        self.connection = connection
        self.operation = operation
        self.context = context
    }

    // MARK: filled by the connection's thread

    func deliver(_ item: ChannelItem) {
        let waiters = state.withLock { state in
            if case .event(.exited(let status)) = item { state.exit = status }
            state.items.append(item)
            return Slot.item.take(from: &state)
        }
        for waiter in waiters { waiter.resume() }
    }

    func finish(_ end: ChannelEnd) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard state.end == nil else { return [] }
            state.end = end
            return Slot.end.take(from: &state) + Slot.item.take(from: &state) + Slot.stdin.take(from: &state)
        }
        for waiter in waiters { waiter.resume() }
    }

    func stdinAcked(_ bytes: UInt64) {
        let waiters = state.withLock { state in
            state.stdinCredit += Int64(clamping: bytes)
            return Slot.stdin.take(from: &state)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Where a suspended task waits.
    enum Slot {
        case item, end, stdin

        func take(from state: inout State) -> [CheckedContinuation<Void, Never>] {
            switch self {
            case .item: defer { state.itemWaiters = [] }; return state.itemWaiters
            case .end: defer { state.endWaiters = [] }; return state.endWaiters
            case .stdin: defer { state.stdinWaiters = [] }; return state.stdinWaiters
            }
        }

        func add(_ waiter: CheckedContinuation<Void, Never>, to state: inout State) {
            switch self {
            case .item: state.itemWaiters.append(waiter)
            case .end: state.endWaiters.append(waiter)
            case .stdin: state.stdinWaiters.append(waiter)
            }
        }

        /// Whether a task waiting here can go on.
        func isReady(_ state: State) -> Bool {
            switch self {
            case .item: state.head < state.items.count || state.end != nil
            case .end: state.end != nil
            case .stdin: state.stdinCredit > 0 || state.end != nil
            }
        }
    }

    /// Suspends until `slot` is ready or the task is cancelled. Nothing blocks: the
    /// connection's thread resumes the continuation.
    private func suspend(_ slot: Slot) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state -> Bool in
                    if slot.isReady(state) || Task.isCancelled { return true }
                    slot.add(continuation, to: &state)
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            for waiter in state.withLock({ slot.take(from: &$0) }) { waiter.resume() }
        }
    }

    // MARK: read by tasks

    /// The next item, waiting for it; nil once the session ended (the end is in `end`).
    /// Acks output as it is taken, so the window follows what the caller consumes.
    func next() async throws(TetherError) -> ChannelItem? {
        while true {
            let (item, ended, ack) = state.withLock { state -> (ChannelItem?, Bool, Int) in
                guard state.head < state.items.count else { return (nil, state.end != nil, 0) }
                let item = state.items[state.head]
                state.head += 1
                if state.head == state.items.count {
                    state.items.removeAll(keepingCapacity: true)
                    state.head = 0
                }
                var ack = 0
                if case .event(.stdout(let bytes)) = item { state.unacked += bytes.count }
                if case .event(.stderr(let bytes)) = item { state.unacked += bytes.count }
                if state.unacked >= FlowControl.ackThresholdBytes && state.end == nil {
                    ack = state.unacked
                    state.unacked = 0
                }
                return (item, false, ack)
            }
            if ack > 0 { connection.send(Frame(id: id, kind: .ack, payload: Ack(bytes: UInt64(ack)).cborBytes), for: self) }
            if let item { return item }
            if ended { return nil }
            try await waitForItem()
        }
    }

    /// The first item without taking it, waiting for it; nil if the session ended first.
    func peek() async throws(TetherError) -> ChannelItem? {
        while true {
            let (item, ended) = state.withLock { state -> (ChannelItem?, Bool) in
                state.head < state.items.count ? (state.items[state.head], false) : (nil, state.end != nil)
            }
            if let item { return item }
            if ended { return nil }
            try await waitForItem()
        }
    }

    /// Acks output ahead, before any arrives: the session's output window becomes
    /// `FlowControl.outputWindowBytes` (PROTOCOL.md 8; a relay lets it grow that far). For
    /// sessions that stream (exec, file reads); the caller still acks what it consumes.
    func widenOutputWindow() {
        let ahead = FlowControl.outputWindowBytes - FlowControl.initialWindowBytes
        connection.send(Frame(id: id, kind: .ack, payload: Ack(bytes: UInt64(ahead)).cborBytes), for: self)
    }

    var end: ChannelEnd? { state.withLock { $0.end } }
    var exit: ExitStatus? { state.withLock { $0.exit } }

    private func waitForItem() async throws(TetherError) {
        await suspend(.item)
        if Task.isCancelled { throw cancelledError() }
    }

    /// Waits until the session ended (whoever reads its events).
    func waitForEnd() async throws(TetherError) {
        await suspend(.end)
        if end == nil && Task.isCancelled { throw cancelledError() }
    }

    // MARK: stdin

    /// Sends `bytes` as stdin frames within the stdin window, waiting for the agent's acks.
    func writeStdin(_ bytes: [UInt8]) async throws(TetherError) {
        var offset = 0
        while offset < bytes.count {
            let take = try await takeStdinCredit(upTo: min(bytes.count - offset, Frame.maxDataPayloadBytes))
            connection.send(Frame(id: id, kind: .stdin, payload: Array(bytes[offset..<(offset + take)])), for: self)
            offset += take
        }
    }

    func closeStdin() throws(TetherError) {
        let already = state.withLock { state -> Bool in
            defer { state.stdinClosed = true }
            return state.stdinClosed
        }
        if already || end != nil { return }
        connection.send(Frame(id: id, flags: .end, kind: .stdin, payload: []), for: self)
    }

    private func takeStdinCredit(upTo wanted: Int) async throws(TetherError) -> Int {
        while true {
            let outcome = state.withLock { state -> Result<Int, TetherError>? in
                if let end = state.end {
                    if case .failed(let error) = end { return .failure(error) }
                    return .failure(TetherError(.invalidArgument, "the session has ended; its stdin is closed", operation: "stdin", context: context))
                }
                if state.stdinClosed {
                    return .failure(TetherError(.invalidArgument, "stdin was closed", operation: "stdin", context: context))
                }
                guard state.stdinCredit > 0 else { return nil }
                let take = Int(min(Int64(wanted), state.stdinCredit))
                state.stdinCredit -= Int64(take)
                return .success(take)
            }
            if let outcome { return try outcome.get() }
            await suspend(.stdin)
            if Task.isCancelled { throw cancelledError() }
        }
    }

    func cancelledError() -> TetherError {
        TetherError(.cancelled, "the task was cancelled", operation: operation, context: context)
    }
}
