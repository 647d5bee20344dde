import Foundation

/// Polls `condition` until it holds or `seconds` pass (for conditions the system reaches on
/// its own, such as a process disappearing; never for measuring time).
public func eventually(within seconds: Double = 20, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// Processes whose parent is `pid`, with their state letter (from /proc/PID/stat).
public func childProcesses(of pid: Int32) -> [(pid: Int32, state: Character)] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    var result: [(Int32, Character)] = []
    for entry in entries {
        guard let child = Int32(entry),
              let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        if fields.count > 1, Int32(fields[1]) == pid, let state = fields[0].first { result.append((child, state)) }
    }
    return result
}

/// Whether a process exists (and is not a zombie).
public func processIsAlive(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(after: close)...].split(separator: " ").first?.first
    return state != "Z" && state != "X"
}
