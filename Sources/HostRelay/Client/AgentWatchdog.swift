import TetherPosix
import TetherProtocol

/// Notices, on a connection's thread, an agent that stopped answering while sessions wait on
/// it (a frozen VM, a SIGSTOPped agent: the sockets stay open, so nothing ever fails by
/// itself). While a watched session (exec, attach) is open it pings through the relay, which
/// forwards pings to the agent, every quarter of the timeout; any frame from the far side
/// counts as an answer. When nothing came for the whole timeout, `expire` is called once.
///
/// The relay has its own, longer limit (`--unresponsive-after`) after which it tells every
/// client; this deadline is the client's, so a command fails in time whatever the relay's
/// setting.
final class AgentWatchdog {
    let timeoutNs: UInt64
    private let loop: EventLoop
    private let sendPing: (Ping) -> Void
    private let expire: (Duration) -> Void
    private var watched: Set<UInt32> = []
    private var lastHeardNs: UInt64 = 0
    private var ticking = false
    /// The watchdog's pings use the upper half of the nonce space; `ping()` counts from 1.
    private var nextNonce: UInt64 = 1 << 63

    init(timeout: Duration, loop: EventLoop, sendPing: @escaping (Ping) -> Void, expire: @escaping (Duration) -> Void) {
        timeoutNs = timeout.nanoseconds
        self.loop = loop
        self.sendPing = sendPing
        self.expire = expire
    }

    static func isWatchdogNonce(_ nonce: UInt64) -> Bool { nonce >= 1 << 63 }

    /// Whether a session of this kind waits on the agent (a relay-answered one, logs, does not).
    static func watches(_ kind: FrameKind) -> Bool { kind == .exec || kind == .attach }

    /// Something arrived from the far side.
    func heard() { lastHeardNs = Clock.monotonicNs() }

    func watch(_ id: UInt32) {
        // The silence is counted from the first session that waits, not from an idle spell.
        if watched.isEmpty { heard() }
        watched.insert(id)
        if !ticking {
            ticking = true
            schedule(afterNs: pingIntervalNs)
        }
    }

    func unwatch(_ id: UInt32) { watched.remove(id) }

    /// A quarter of the timeout (at least 20 ms): an answer is asked for four times per deadline.
    private var pingIntervalNs: UInt64 { max(timeoutNs / 4, 20_000_000) }

    private func schedule(afterNs delay: UInt64) {
        _ = loop.schedule(after: .nanoseconds(Int64(clamping: delay))) { [weak self] in self?.tick() }
    }

    private func tick() {
        guard !watched.isEmpty else {
            ticking = false
            return
        }
        let silentNs = Clock.monotonicNs() - lastHeardNs
        if silentNs > timeoutNs {
            ticking = false
            watched.removeAll()
            expire(.nanoseconds(Int64(clamping: silentNs)))
            return
        }
        sendPing(Ping(nonce: nextNonce))
        nextNonce = nextNonce == .max ? 1 << 63 : nextNonce + 1
        // The next look is at the next ping, or just after the deadline if that comes first,
        // so a silent agent is reported at the deadline rather than up to a ping later.
        schedule(afterNs: min(pingIntervalNs, timeoutNs - silentNs + 1_000_000))
    }
}
