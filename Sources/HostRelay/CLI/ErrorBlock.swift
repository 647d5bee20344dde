#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherClient
import TetherPosix
import TetherRelay
import TetherSandbox

/// A failure of the CLI itself, not of the program it ran: what went wrong and a hint.
struct CLIError: Error {
    var message: String
    var hint: String?
    var details: [(String, String)] = []
    var exitStatus: Int32 = 1
    /// The error's name in `--json` output.
    var code = "failed"
}

/// Prints errors on standard error, in one of two forms chosen once for the whole process
/// (`ErrorBlock.json`, set by `--json` or TETHER_ERRORS=json). As a block:
///
///     tether: exec: program not found: cannot execute nosuchprog: ENOENT (No such file or directory) (stage exec)
///       command: nosuchprog
///       -> check the program name and PATH inside the sandbox
///
/// or as one JSON object on one line, `{code, message, operation, context, suggestion, errno?,
/// timestamp}`, for tools that wrap the CLI. Every error of every command goes through
/// `report`; warnings go through `warning` and stay text.
enum ErrorBlock {
    nonisolated(unsafe) static var json = ProcessInfo.processInfo.environment["TETHER_ERRORS"] == "json"

    /// Prints `error` in the chosen form. `operation` names what was being done when the error
    /// itself does not (a usage mistake, a sandbox command).
    static func report(_ error: any Error, operation: String) {
        let report = ErrorReport(error, operation: operation)
        let text = json ? report.json + "\n" : report.text
        writeStandardError(LocalTerminal.isRaw ? text.replacingOccurrences(of: "\n", with: "\r\n") : text)
    }

    /// The spellings commands used before `report`; each is the same one path.
    static func print(_ error: TetherError) { report(error, operation: error.operation) }
    static func print(_ error: CLIError) { report(error, operation: "tether") }
    static func print(_ error: UsageError) { report(error, operation: error.command ?? "tether") }

    /// `tether: warning: TEXT`, with the hint on its own indented line. In raw terminal mode
    /// lines end in CR LF.
    static func warning(_ text: String, hint: String? = nil) {
        let block = render(message: "warning: " + text, hint: hint)
        writeStandardError(LocalTerminal.isRaw ? block.replacingOccurrences(of: "\n", with: "\r\n") : block)
    }

    /// A note that is neither error nor warning (`tether: detached from session 3`).
    static func note(_ text: String) {
        let line = "tether: " + text + "\n"
        writeStandardError(LocalTerminal.isRaw ? "\r\n" + line.replacingOccurrences(of: "\n", with: "\r\n") : line)
    }

    static func render(message: String, details: [(String, String)] = [], hint: String?) -> String {
        var lines = ["tether: " + message]
        for (name, value) in details { lines.append("  \(name): \(value)") }
        if let hint { lines.append("  -> " + hint) }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// One error as the CLI reports it, whatever layer threw it: the fields of `--json`, and the
/// text block made from the same fields, so the two forms never say different things.
struct ErrorReport: Encodable {
    var code: String
    var message: String
    var operation: String
    var context: [String: String] = [:]
    var suggestion: String?
    var errno: Int32?
    var timestamp = Date()
    /// Whether the text form lists `context` under the message (a sandbox error's context
    /// only repeats what its message says).
    var contextInText = true

    init(code: String, message: String, operation: String, context: [String: String] = [:], suggestion: String? = nil,
         errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.operation = operation
        self.context = context
        self.suggestion = suggestion
        self.errno = errno
    }

    init(_ error: any Error, operation: String) {
        switch error {
        case let error as TetherError:
            self.init(error)
        case let error as SandboxError:
            self.init(code: error.code, message: error.message, operation: operation, context: error.context,
                      suggestion: error.hint, errno: error.errno)
            contextInText = false
        case let error as UsageError:
            self.init(code: "usage", message: error.message, operation: error.command ?? operation,
                      suggestion: "see `tether \(error.command.map { $0 + " " } ?? "")--help`")
        case let error as CLIError:
            self.init(code: error.code, message: error.message, operation: operation,
                      context: Dictionary(error.details, uniquingKeysWith: { _, last in last }), suggestion: error.hint)
        case let error as RelayError:
            self.init(code: "relayFailed", message: error.description, operation: "relay", suggestion: error.suggestion)
        case let error as Errno:
            self.init(code: "internal", message: error.description, operation: operation, errno: error.rawValue)
        default:
            self.init(code: "internal", message: "\(error)", operation: operation)
        }
    }

    init(_ error: TetherError) {
        self.init(code: error.code.name, message: error.message, operation: error.operation, context: error.context,
                  suggestion: error.suggestion, errno: error.errno)
        timestamp = error.timestamp
        // An errno the message does not already name is added in words, once.
        if error.spawn == nil, let errno = error.errno, errno != 0, let symbol = Errno.symbol(errno), !message.contains(symbol) {
            message += " (\(Errno(rawValue: errno)))"
        }
    }

    private enum CodingKeys: String, CodingKey { case code, message, operation, context, suggestion, errno, timestamp }

    /// Every field but `errno` is always there (`suggestion` may be null); `errno` only when
    /// a system call's failure is behind the error.
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(code, forKey: .code)
        try container.encode(message, forKey: .message)
        try container.encode(operation, forKey: .operation)
        try container.encode(context, forKey: .context)
        try container.encode(suggestion, forKey: .suggestion)
        try container.encodeIfPresent(errno, forKey: .errno)
        try container.encode(timestamp, forKey: .timestamp)
    }

    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        guard let data = try? encoder.encode(self) else { return #"{"code":"internal","message":"unencodable error"}"# }
        return String(decoding: data, as: UTF8.self)
    }

    /// `tether: OPERATION: MESSAGE`, the context one key a line, the suggestion after `->`.
    var text: String {
        let details = contextInText ? context.keys.sorted().map { key in (key == "argv" ? "command" : key, context[key] ?? "") } : []
        return ErrorBlock.render(message: operation == "tether" ? message : "\(operation): \(message)", details: details, hint: suggestion)
    }
}

func writeStandardError(_ text: String) {
    _ = try? FileIO.writeAll(2, Array(text.utf8))
}

func writeStandardOutput(_ text: String) {
    _ = try? FileIO.writeAll(1, Array(text.utf8))
}
