extension Duration {
    /// The whole duration in nanoseconds, sub-second part included; negative durations are 0,
    /// durations beyond UInt64 saturate. `components` splits seconds from attoseconds, so
    /// reading `.components.seconds` alone would drop everything below a second.
    public var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0 else { return 0 }
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return .max }
        let (total, overflowAgain) = whole.addingReportingOverflow(UInt64(max(0, attoseconds) / 1_000_000_000))
        return overflowAgain ? .max : total
    }
}
