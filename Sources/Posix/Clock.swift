#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Clock readings in nanoseconds. C: clock_gettime(2)
public enum Clock {
    private static func read(_ clock: clockid_t) -> UInt64 {
        var ts = timespec()
        clock_gettime(clock, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
    /// For intervals and deadlines.
    public static func monotonicNs() -> UInt64 { read(CLOCK_MONOTONIC) }
    /// Since boot, including suspend: what the agent's hello reports as bootNs/readyNs.
    public static func bootTimeNs() -> UInt64 { read(CLOCK_BOOTTIME) }
    /// Wall clock, for logs and session start times.
    public static func realtimeNs() -> UInt64 { read(CLOCK_REALTIME) }
}
