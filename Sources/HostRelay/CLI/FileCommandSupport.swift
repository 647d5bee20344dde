#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherClient
import TetherPosix
import TetherProtocol

/// What `tether cp` and `tether fs` share: guest paths, the client, errors and exit statuses.
///
/// Exit statuses (README, "Files"): 0 done; 1 the file operation failed (the guest's or the
/// local file system refused it: the message names the kind, operation, path and errno);
/// 2 usage; 125 tether itself failed (no relay, the agent gone, a cut connection).
enum FileCommands {
    static let fileFailed: Int32 = 1

    static let userOption = OptionSpec("-u", "--user", value: true)

    /// Connects and runs `body`; a `FileError` is reported (`report`) and becomes the exit status.
    static func run(_ options: ClientOptions, command: String,
                    _ body: @escaping @Sendable (TetherClient) async throws(FileError) -> Int32) -> Int32 {
        runAsync {
            do throws(FileError) {
                let client: TetherClient
                do throws(TetherError) { client = try await TetherClient.connect(options) } catch { throw .client(error) }
                defer { client.close() }
                return try await body(client)
            } catch {
                report(error, command: command)
                return status(for: error)
            }
        }
    }

    /// As every CLI error (text, or JSON with --json or TETHER_ERRORS=json): the guest's kind is
    /// the code, with the failed call and the path.
    static func report(_ error: FileError, command: String) {
        switch error {
        case .client(let error): ErrorBlock.report(error, operation: error.operation)
        case .file(let f):
            var context = ["call": f.op]
            if let path = f.path { context["path"] = path.description }
            let report = ErrorReport(code: f.kind.rawValue, message: "\(f.kind): \(f.message.isEmpty ? f.op : f.message)",
                                     operation: command, context: context, suggestion: hint(f.kind), errno: f.errno)
            writeStandardError(ErrorBlock.json ? report.json + "\n" : report.text)
        }
    }

    static func status(for error: FileError) -> Int32 {
        switch error {
        case .file: return fileFailed
        case .client(let error):
            if error.code == .invalidArgument { return CLIExit.usage }
            return CLIExit.tetherFailed
        }
    }

    private static func hint(_ kind: FileErrorKind) -> String? {
        switch kind {
        case .permissionDenied: "the operation runs as root unless --user says otherwise; check the guest's permissions"
        case .noSpace: "the guest's file system is full"
        case .readOnly: "the guest's file system is mounted read-only"
        case .preconditionFailed: "the file exists (drop --if-absent to replace it)"
        case .checksumMismatch: "the bytes were damaged on the way; the old file is unchanged; copy again"
        default: nil
        }
    }

    /// A local failure as a `FileError` (same printing, same statuses).
    static func local(_ errno: Errno, op: String, path: String) -> FileError {
        .file(FsError(kind: FileErrorKind(errno: errno.rawValue), op: op, path: OSString(path), errno: errno.rawValue,
                      message: "\(op) \(path) (local): \(errno.message)"))
    }
}

/// One side of `tether cp`: a local path, `-` (stdin or stdout), or a guest path.
enum CopyEndpoint: Equatable {
    case local(String)
    case standardStream
    /// `sandbox` nil: the relay the options name (`:PATH`).
    case guest(sandbox: String?, path: String)

    /// `NAME:PATH` or `:PATH` is a guest path (as docker cp and kubectl cp spell them); a path
    /// with a `/` before its first `:` is local (write `./a:b` for a local name with a colon).
    init(_ text: String) {
        if text == "-" { self = .standardStream; return }
        if let colon = text.firstIndex(of: ":"), !text[..<colon].contains("/") {
            let name = String(text[..<colon])
            let path = String(text[text.index(after: colon)...])
            self = .guest(sandbox: name.isEmpty ? nil : name, path: path.isEmpty ? "/" : path)
            return
        }
        self = .local(text)
    }

    var isGuest: Bool {
        if case .guest = self { return true }
        return false
    }
}

/// A progress line on a terminal for long copies, at most five times a second.
final class ProgressLine: @unchecked Sendable {
    private let enabled: Bool
    private let total: UInt64?
    private let label: String
    private var done: UInt64 = 0
    private var lastNs: UInt64 = 0
    private let startNs = Clock.monotonicNs()
    private var shown = false

    init(label: String, total: UInt64?, enabled: Bool) {
        self.label = label
        self.total = total
        self.enabled = enabled && isatty(2) == 1
    }

    func advance(_ bytes: Int) {
        done += UInt64(bytes)
        guard enabled else { return }
        let now = Clock.monotonicNs()
        guard now - lastNs > 200_000_000 else { return }
        lastNs = now
        let seconds = max(Double(now - startNs) / 1e9, 0.001)
        let rate = Double(done) / seconds / 1_048_576
        var text = "\r\(label): \(Self.mib(done))"
        if let total, total > 0 { text += " of \(Self.mib(total)) (\(done * 100 / total)%)" }
        text += String(format: ", %.1f MiB/s  ", rate)
        writeStandardError(text)
        shown = true
    }

    func finish() {
        if shown { writeStandardError("\n") }
    }

    static func mib(_ bytes: UInt64) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
}
