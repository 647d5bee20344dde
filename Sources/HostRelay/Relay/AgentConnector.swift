#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization
import TetherPosix
import TetherProtocol

/// Connects to the agent on its own thread (a vsock or hvsock connect can block), retrying
/// with capped exponential backoff until a connect succeeds or the deadline passes, then
/// reports once through `report`.
///
/// Owns its thread; the descriptor it connects is handed to the relay in the report. Ends
/// after reporting, or early on `cancel()`.
final class AgentConnector: @unchecked Sendable {
    enum Outcome: Sendable {
        /// A connected descriptor (owned by the receiver).
        case connected(CInt)
        /// Gave up: the deadline passed or the error cannot go away by waiting.
        case failed(String)
    }

    private let address: Address
    private let deadlineNs: UInt64
    private let report: @Sendable (Outcome) -> Void
    /// Wakes the backoff sleep early on `cancel()`.
    private let wakeup: WakeGate
    private let cancelled = Atomic<Bool>(false)

    static let initialDelayNs: UInt64 = 20_000_000
    static let maxDelayNs: UInt64 = 1_000_000_000

    init(address: Address, deadlineNs: UInt64, report: @escaping @Sendable (Outcome) -> Void) throws(Errno) {
        wakeup = try WakeGate()
        self.address = address
        self.deadlineNs = deadlineNs
        self.report = report
    }

    func start() {
        DedicatedThread.start(named: "tether-agent-connect") { [self] in report(connect()) }
    }

    func cancel() {
        cancelled.store(true, ordering: .relaxed)
        wakeup.wake()
    }

    private func connect() -> Outcome {
        var delay = Self.initialDelayNs
        var lastError = "not tried"
        while !cancelled.load(ordering: .relaxed) {
            do {
                let fd = try Socket.connect(address)
                return .connected(fd.release())
            } catch {
                lastError = error.description
                if case .fd = address { return .failed(lastError) }
                if let errno = error.errno, !Self.isTransient(errno) { return .failed(lastError) }
            }
            let now = Clock.monotonicNs()
            guard now < deadlineNs else { break }
            let wait = min(delay, deadlineNs - now)
            wakeup.sleep(timeout: .nanoseconds(Int64(wait)))
            delay = min(delay * 2, Self.maxDelayNs)
        }
        return .failed(lastError)
    }

    /// Errors that mean "not there yet": the socket file, the listener or the guest's vsock
    /// device may still be coming up. Others (no vsock support, a bad path) will not change.
    static func isTransient(_ errno: Errno) -> Bool {
        switch errno.rawValue {
        case ENOENT, ECONNREFUSED, ECONNRESET, ETIMEDOUT, EAGAIN, ENODEV, EHOSTUNREACH, ENETUNREACH, EINTR, ECONNABORTED, EPIPE:
            true
        default:
            false
        }
    }
}
