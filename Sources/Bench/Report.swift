import Foundation

/// Prints results as `name: value` lines, flushing each so a long run shows progress.
final class Report {
    func section(_ title: String) { emit("# \(title)") }
    func value(_ name: String, _ value: String) { emit("\(name): \(value)") }
    func failure(_ message: String) {
        FileHandle.standardError.write(Data("tether-bench: \(message)\n".utf8))
    }
    private func emit(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}
