/// A `Duration` as a whole count of a unit, for syscalls, wire fields and deadlines in
/// `Clock` nanoseconds. Negative durations count as zero; the sub-second part is kept.
extension Duration {
    public var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0, attoseconds >= 0 else { return 0 }
        return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }

    public var milliseconds: UInt64 { nanoseconds / 1_000_000 }
}
