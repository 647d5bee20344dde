#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherClient
import TetherPosix
import TetherRelay

/// A failure of the CLI itself, not of the program it ran: what went wrong and a hint.
struct CLIError: Error {
    var message: String
    var hint: String?
    var details: [(String, String)] = []
    var exitStatus: Int32 = 1
}

/// Prints errors as a block on standard error:
///
///     tether: exec: program not found: nosuchprog (stage exec, errno 2: No such file or directory)
///       command: nosuchprog
///       -> check the program name and PATH inside the sandbox
///
/// With TETHER_ERRORS=json in the environment, a `TetherError` is printed as one JSON object
/// instead (for tools that wrap the CLI).
enum ErrorBlock {
    static func render(message: String, details: [(String, String)] = [], hint: String?) -> String {
        var lines = ["tether: " + message]
        for (name, value) in details { lines.append("  \(name): \(value)") }
        if let hint { lines.append("  -> " + hint) }
        return lines.joined(separator: "\n") + "\n"
    }

    static func render(_ error: TetherError) -> String {
        var message = "\(error.operation): \(error.message)"
        if error.spawn == nil, let errno = error.errno, errno != 0 { message += " (errno \(errno): \(String(cString: strerror(errno))))" }
        if let spawn = error.spawn, spawn.errno != 0 {
            message = "\(error.operation): \(error.message.replacingOccurrences(of: "errno \(spawn.errno))", with: "errno \(spawn.errno): \(String(cString: strerror(spawn.errno))))"))"
        }
        var details: [(String, String)] = []
        for key in error.context.keys.sorted() {
            let label = key == "argv" ? "command" : key
            details.append((label, error.context[key] ?? ""))
        }
        return render(message: message, details: details, hint: error.suggestion)
    }

    static func print(_ error: TetherError) {
        if ProcessInfo.processInfo.environment["TETHER_ERRORS"] == "json" {
            writeStandardError(error.json + "\n")
        } else {
            writeStandardError(render(error))
        }
    }

    static func print(_ error: CLIError) {
        writeStandardError(render(message: error.message, details: error.details, hint: error.hint))
    }

    static func print(_ error: UsageError) {
        writeStandardError(render(message: error.message, hint: error.command.map { "see `tether \($0) --help`" }))
    }

    static func print(_ error: RelayError) {
        writeStandardError(render(message: "relay: \(error.description)", hint: error.suggestion))
    }
}

func writeStandardError(_ text: String) {
    _ = try? FileIO.writeAll(2, Array(text.utf8))
}

func writeStandardOutput(_ text: String) {
    _ = try? FileIO.writeAll(1, Array(text.utf8))
}
