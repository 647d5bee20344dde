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

    /// The whole duration in milliseconds (for the wire's `...Ms` fields), rounded down.
    public var milliseconds: UInt64 { nanoseconds / 1_000_000 }

    /// "1s", "1.5s", "250ms": a `...Ms` value as people write a duration (and `--timeout` reads it).
    public static func describe(milliseconds: UInt64) -> String {
        if milliseconds % 1000 == 0 { return "\(milliseconds / 1000)s" }
        if milliseconds > 1000 { return "\(Double(milliseconds) / 1000)s" }
        return "\(milliseconds)ms"
    }
}
