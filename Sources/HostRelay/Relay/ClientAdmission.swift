#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// What the relay knows about the clients it could not take: its spare descriptor, how long
/// the listener rests after accept(2) fails, and the refusals not yet reported on its log.
///
/// Owns one spare descriptor (`/dev/null`, opened by `openSpare()`, closed by `closeSpare()`).
/// At the descriptor limit a waiting connection stays in the listener's backlog, and the
/// listener stays readable: a level-triggered loop would call accept(2) again at once, fail
/// again, and spin. Giving the spare up for a moment lets the relay accept that connection,
/// tell the client why (`tooManyClients`) and close it, so the backlog drains and the client
/// hears at once instead of hanging.
///
/// Touched only by the relay's loop thread; `Relay.shutDown()` closes the spare.
final class ClientAdmission {
    /// Why a connection was turned away, or why the listener rested.
    enum Refusal: Hashable {
        /// Accepted on the spare descriptor at the descriptor limit, told, closed.
        case descriptorLimit(Errno)
        /// Over `--max-clients`: told, closed.
        case overCap
        /// accept(2) failed in a way the spare does not get around (ENFILE while another
        /// process took the freed slot, ENOMEM, ENOBUFS, ...): the listener rests, the clients
        /// wait in the backlog.
        case listenerRested(Errno)
    }

    /// The spare descriptor, -1 when there is none (not opened yet, or lost to another thread
    /// that took the freed slot first).
    private(set) var spare: CInt = -1

    /// The listener is unwatched until a timer watches it again.
    var listenerResting = false
    /// How long the listener rests the next time accept(2) fails and the spare cannot help:
    /// doubles each time up to `longestRest`, and is back to `shortestRest` once an accept
    /// works again.
    private(set) var nextRest = ClientAdmission.shortestRest
    /// The rest taken last, for the report.
    private var lastRest = Duration.zero
    static let shortestRest = Duration.milliseconds(10)
    static let longestRest = Duration.seconds(1)

    /// Refusals counted since the last report line, in the order they first happened.
    private var counts: [Refusal: Int] = [:]
    private var order: [Refusal] = []
    /// When the last report line was written (monotonic ns); nil before the first.
    private var lastReportNs: UInt64?
    /// A timer will write the counts once a second has passed since the last line.
    var reportScheduled = false
    /// One report line a second at most, whatever the flood.
    static let reportIntervalNs: UInt64 = 1_000_000_000

    /// Opens the spare descriptor if there is none. False when that fails (EMFILE: the limit
    /// is reached already; it is tried again after the listener's next rest).
    @discardableResult
    func openSpare() -> Bool {
        guard spare < 0 else { return true }
        let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        spare = fd
        return true
    }

    func closeSpare() {
        guard spare >= 0 else { return }
        _ = Glibc.close(spare)
        spare = -1
    }

    /// An accept worked: the next rest starts short again.
    func acceptWorked() { nextRest = Self.shortestRest }

    /// How long to rest now; the rest after it is twice as long, up to `longestRest`.
    func takeRest() -> Duration {
        let rest = nextRest
        lastRest = rest
        nextRest = min(nextRest * 2, Self.longestRest)
        return rest
    }

    func count(_ refusal: Refusal) {
        if counts[refusal] == nil { order.append(refusal) }
        counts[refusal, default: 0] += 1
    }

    var hasUnreported: Bool { !order.isEmpty }

    /// Whether a line may be written now (a second since the last, or none yet), and if not,
    /// when it may.
    func reportDue(nowNs: UInt64) -> (now: Bool, atNs: UInt64) {
        guard let last = lastReportNs else { return (true, nowNs) }
        let next = last &+ Self.reportIntervalNs
        return (nowNs >= next, next)
    }

    /// The report line for what was counted since the last one, which it resets; nil when
    /// nothing was.
    func takeReport(nowNs: UInt64, maxClients: Int, descriptorLimit: UInt64?) -> String? {
        guard !order.isEmpty else { return nil }
        let parts = order.map { refusal -> String in
            let n = counts[refusal] ?? 0
            switch refusal {
            case .descriptorLimit(let errno):
                let limit = descriptorLimit.map { ", RLIMIT_NOFILE \($0)" } ?? ""
                return "refused \(Self.clients(n)) at the descriptor limit (accept: \(errno)\(limit))"
            case .overCap:
                return "refused \(Self.clients(n)) over --max-clients \(maxClients)"
            case .listenerRested(let errno):
                return "stopped accepting \(n == 1 ? "once" : "\(n) times"), the last time for \(Self.milliseconds(lastRest)) ms "
                    + "(accept: \(errno)); waiting clients stay queued"
            }
        }
        let text = parts.joined(separator: "; ")
        // The first line of a flood says how the rest are reported.
        let line = lastReportNs.map { "in the last \(Self.seconds(nowNs &- $0)) s: " + text }
            ?? text + " (further refusals: one line a second at most)"
        counts.removeAll()
        order.removeAll()
        lastReportNs = nowNs
        return line
    }

    private static func clients(_ n: Int) -> String { n == 1 ? "1 client" : "\(n) clients" }

    private static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// Nanoseconds as seconds with one decimal ("1.0").
    private static func seconds(_ ns: UInt64) -> String {
        let tenths = ns / 100_000_000
        return "\(tenths / 10).\(tenths % 10)"
    }
}
