/// Summary of repeated timings, in nanoseconds.
struct Timings {
    private(set) var samples: [UInt64] = []

    init(reserving count: Int = 0) { samples.reserveCapacity(count) }

    mutating func add(_ ns: UInt64) { samples.append(ns) }

    /// The value below which `fraction` of the samples fall (nearest rank).
    func percentile(_ fraction: Double) -> UInt64 {
        precondition(!samples.isEmpty, "no samples")
        let sorted = samples.sorted()
        let rank = Int((fraction * Double(sorted.count)).rounded(.up)) - 1
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }

    var median: UInt64 { percentile(0.5) }
    var p99: UInt64 { percentile(0.99) }
}

/// Megabytes (10^6 bytes) per second.
func megabytesPerSecond(bytes: Int, ns: UInt64) -> Double {
    Double(bytes) / (Double(ns) / 1e9) / 1e6
}

func microseconds(_ ns: UInt64) -> String {
    microseconds(nanoseconds: Double(ns))
}

/// A difference of two timings, which may be negative.
func microseconds(nanoseconds ns: Double) -> String {
    formatted(ns / 1000, decimals: 1) + " us"
}

func formatted(_ value: Double, decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    var text = String(rounded)
    if let dot = text.firstIndex(of: ".") {
        let places = text.distance(from: dot, to: text.endIndex) - 1
        if places < decimals { text += String(repeating: "0", count: decimals - places) }
    } else if decimals > 0 {
        text += "." + String(repeating: "0", count: decimals)
    }
    return text
}

/// The median of `runs` elapsed times of one bulk transfer. On a shared two-core machine one
/// run of the same transfer varies by up to 2x; every bulk figure, the kernel's ceilings and
/// Tether's alike, is the median of the same number of runs so that their ratios hold.
func medianElapsed(_ runs: Int, _ body: () throws -> UInt64) rethrows -> UInt64 {
    var timings = Timings(reserving: runs)
    for _ in 0..<max(runs, 1) { timings.add(try body()) }
    return timings.median
}

/// A ceiling and Tether's transfer that is measured against it, run alternately (ceiling,
/// Tether, ceiling, Tether, ...) `runs` times each, with each one's median. Measured minutes
/// apart, a ceiling and its transfer saw different machines: the pipe ceiling read 1.2 GB/s at
/// the start of one run and 2.3 GB/s in the next, and the ratio followed it.
func pairedMedians(_ runs: Int, ceiling: () throws -> UInt64,
                   tether: () async throws -> UInt64) async rethrows -> (ceiling: UInt64, tether: UInt64) {
    var ceilings = Timings(reserving: runs)
    var tethers = Timings(reserving: runs)
    for _ in 0..<max(runs, 1) {
        ceilings.add(try ceiling())
        tethers.add(try await tether())
    }
    return (ceilings.median, tethers.median)
}
