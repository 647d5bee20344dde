import TetherPosix
import TetherProtocol

/// Frames of one session held by the relay, in arrival order, because its client has no
/// window left, or nobody is attached (the replay buffer). Data payloads may be split when
/// they leave; other frames leave whole.
struct PendingFrames {
    struct Entry {
        var kind: FrameKind
        var flags: FrameFlags
        var payload: [UInt8]
        /// Bytes of `payload` already sent (data kinds only).
        var offset = 0
        var remaining: Int { payload.count - offset }
    }

    private var entries = HeadQueue<Entry>()
    /// Unsent data bytes held.
    private(set) var dataBytes = 0

    var isEmpty: Bool { entries.isEmpty }
    var first: Entry? { entries.first }

    mutating func append(kind: FrameKind, flags: FrameFlags, payload: UnsafeRawBufferPointer) {
        append(kind: kind, flags: flags, payload: Array(payload))
    }

    mutating func append(kind: FrameKind, flags: FrameFlags, payload: [UInt8]) {
        entries.append(Entry(kind: kind, flags: flags, payload: payload))
        if kind.isData { dataBytes += payload.count }
    }

    /// Marks `count` bytes of the first entry (a data frame) as sent.
    mutating func consumeData(_ count: Int) {
        entries[0].offset += count
        dataBytes -= count
        if entries[0].remaining == 0 { removeFirst() }
    }

    mutating func removeFirst() {
        let entry = entries.removeFirst()
        if entry.kind.isData { dataBytes -= entry.remaining }
    }

    /// Drops the oldest data until at most `limit` data bytes remain; other frames stay.
    /// Returns how many bytes were dropped.
    mutating func trimData(toAtMost limit: Int) -> Int {
        var dropped = 0
        var i = 0
        while dataBytes > limit && i < entries.count {
            if entries[i].kind.isData && entries[i].remaining > 0 {
                let cut = min(entries[i].remaining, dataBytes - limit)
                entries[i].offset += cut
                dataBytes -= cut
                dropped += cut
            }
            i += 1
        }
        entries.removeAll { $0.kind.isData && $0.remaining == 0 }
        return dropped
    }

    /// Drops every data frame (an attach without replay); other frames stay.
    mutating func removeAllData() -> Int {
        trimData(toAtMost: 0)
    }
}

/// Output flow control of one session across the relay: the
/// agent's window towards the relay, and the client's window from the relay, kept so that
/// what the relay holds plus what the client has not acked never exceeds the client's window
/// (256 KiB, or up to `maxWindow` for a client that acked ahead).
///
/// While a client is attached, the relay acks the agent exactly as fast as the client
/// consumes, so the window is end to end and a slow client slows only its own program.
/// While nobody is attached (a detached session), the relay acks the agent as the data
/// arrives and keeps the newest `replayBytes` for the next attach.
struct OutputFlow {
    static let window = Int64(FlowControl.initialWindowBytes)
    /// How far a client may widen its window by acking ahead (PROTOCOL.md 8): the most the
    /// relay lets the agent send of one session before its client has room for it.
    static let maxWindow = Int64(FlowControl.outputWindowBytes)

    /// Total data bytes the agent may have sent: the initial window plus every ack sent.
    private(set) var agentGranted: Int64 = window
    /// Data bytes received from the agent.
    private(set) var received: Int64 = 0
    /// Data bytes sent to the current client.
    private(set) var sent: Int64 = 0
    /// Total data bytes the current client may have been sent: window plus its acks.
    private(set) var clientGranted: Int64 = window
    var pending = PendingFrames()
    /// Data dropped from the replay buffer since the last attach.
    var droppedBytes: UInt64 = 0

    var clientCredit: Int64 { clientGranted - sent }
    /// Sent to the client and not yet acked by it.
    var clientOutstanding: Int64 { sent - (clientGranted - Self.window) }
    var agentCredit: Int64 { agentGranted - received }

    mutating func receivedFromAgent(_ bytes: Int) { received += Int64(bytes) }
    mutating func sentToClient(_ bytes: Int) { sent += Int64(bytes) }

    /// The client acked `bytes`. Beyond what it was sent it widens its window (acking ahead),
    /// up to `maxWindow` of credit and no further.
    mutating func clientAcked(_ bytes: UInt64) {
        let acked = Int64(clamping: bytes)
        clientGranted = min(clientGranted &+ acked, sent + Self.maxWindow)
    }

    /// A new client takes over (attach) or the last one left: its window starts afresh.
    mutating func resetClient() {
        sent = 0
        clientGranted = Self.window
    }

    /// The agent's side starts afresh (a new agent id for the same session after a re-attach).
    mutating func resetAgent() {
        received = 0
        agentGranted = Self.window
    }

    /// How much to ack the agent now (0: nothing). `attached`: a client is reading.
    mutating func agentGrant(attached: Bool) -> Int64 {
        let target: Int64
        if attached {
            // What the client has room for, less what the relay already holds for it.
            target = max(0, clientCredit - Int64(pending.dataBytes))
        } else {
            target = Self.window
        }
        let grant = target - agentCredit
        // Unattached: ack in half-window steps, like any reader.
        guard grant > 0, attached || grant >= Self.window / 2 else { return 0 }
        agentGranted += grant
        return grant
    }
}
