import Foundation
import TetherPosix
import TetherProtocol

/// Every failure the client library reports. A program that exits non-zero is not an error
/// (`ExecOutput.exitCode`); a program that never started is (`code == .spawnFailed`, with
/// `spawn` saying kind, errno and stage).
///
/// Encodes to JSON (`json`) with every field, for tools that log or forward errors.
public struct TetherError: Error, Sendable, Equatable, Codable, CustomStringConvertible {
    /// What kind of failure: the library's own (`relayUnreachable`, `spawnFailed`, ...) or a
    /// code the relay or agent sent (`remote(.agentGone)`, ...). In JSON and in text it is one
    /// name (`"agentGone"`), the wire's own for remote codes.
    public enum Code: Hashable, Sendable, Codable, CustomStringConvertible {
        /// The relay's socket is not there or nobody listens on it (retried within the budget).
        case relayUnreachable
        /// Connecting failed for a reason waiting will not fix (permissions, not a socket).
        case connectionFailed
        /// The connection to the relay ended while something was in flight.
        case connectionClosed
        /// The program never started; see `spawn`.
        case spawnFailed
        /// The caller asked for something that cannot be done (bad argument, stdin taken twice).
        case invalidArgument
        /// The task was cancelled while waiting.
        case cancelled
        /// The retry budget ran out while the failure was still transient.
        case timedOut
        /// The relay sent something this library cannot read.
        case protocolError
        /// The library failed for a reason of its own (a syscall failed); `errno` says which.
        case `internal`
        /// An `error` frame's code, from the relay or the agent.
        case remote(ErrorCode)

        private static let local: [Code] = [
            .relayUnreachable, .connectionFailed, .connectionClosed, .spawnFailed, .invalidArgument,
            .cancelled, .timedOut, .protocolError, .internal,
        ]

        public var name: String {
            switch self {
            case .relayUnreachable: "relayUnreachable"
            case .connectionFailed: "connectionFailed"
            case .connectionClosed: "connectionClosed"
            case .spawnFailed: "spawnFailed"
            case .invalidArgument: "invalidArgument"
            case .cancelled: "cancelled"
            case .timedOut: "timedOut"
            case .protocolError: "protocolError"
            case .internal: "internal"
            case .remote(let code): code.rawValue
            }
        }

        public init(name: String) {
            self = Self.local.first { $0.name == name } ?? .remote(ErrorCode(rawValue: name))
        }

        public var description: String { name }

        public init(from decoder: any Decoder) throws {
            self.init(name: try decoder.singleValueContainer().decode(String.self))
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(name)
        }
    }

    public var code: Code
    /// What went wrong, in a sentence.
    public var message: String
    /// What the library was doing (`exec`, `connect`, `ping`, ...).
    public var operation: String
    /// Details: the socket, the command, the session.
    public var context: [String: String]
    /// What to try next, when there is something.
    public var suggestion: String?
    public var errno: Int32?
    public var timestamp: Date
    /// Why the program did not start (with `code == .spawnFailed`): the agent's `failed` event,
    /// kind, errno and stage typed.
    public var spawn: Failed?

    public init(_ code: Code, _ message: String, operation: String, context: [String: String] = [:],
                suggestion: String? = nil, errno: Int32? = nil, spawn: Failed? = nil, timestamp: Date = Date()) {
        self.code = code
        self.message = message
        self.operation = operation
        self.context = context
        self.suggestion = suggestion ?? Self.defaultSuggestion(code, spawn: spawn)
        self.errno = errno
        self.timestamp = timestamp
        self.spawn = spawn
    }

    /// Worth retrying as is: nothing reached the agent, and waiting can fix it.
    public var isTransient: Bool { code == .relayUnreachable || code == .remote(.agentNotReady) }

    public var description: String {
        var text = "\(operation): \(message)"
        if let errno, let name = Self.errnoName(errno) { text += " (\(name))" }
        return text
    }

    /// The error as one JSON object (keys sorted, ISO 8601 timestamp).
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    /// The same error with more context.
    func adding(_ extra: [String: String]) -> TetherError {
        var copy = self
        copy.context.merge(extra) { _, new in new }
        return copy
    }

    func operation(_ name: String) -> TetherError {
        var copy = self
        copy.operation = name
        return copy
    }

    static func errnoName(_ value: Int32) -> String? {
        let text = String(cString: strerror(value))
        return text.isEmpty ? nil : text
    }

    /// A program that did not start, in a sentence: what kind of failure, the agent's own
    /// words, the stage and the errno, each said once (the agent's message often begins with
    /// the summary, "cannot change to the working directory: ...", and names the errno).
    static func spawnFailed(_ failed: Failed, operation: String, context: [String: String]) -> TetherError {
        let summary = describe(failed.kind, stage: failed.stage).summary
        var message = failed.message.isEmpty ? summary
            : failed.message.hasPrefix(summary) ? failed.message : "\(summary): \(failed.message)"
        var notes = ["stage \(failed.stage.rawValue.isEmpty ? "?" : failed.stage.rawValue)"]
        if failed.errno != 0 {
            let symbol = Errno.symbol(failed.errno)
            if symbol.map({ !message.contains($0) }) ?? true {
                notes.append("errno \(failed.errno)" + (errnoName(failed.errno).map { ": \($0)" } ?? ""))
            }
        }
        message += " (\(notes.joined(separator: ", ")))"
        return TetherError(.spawnFailed, message, operation: operation, context: context, errno: failed.errno == 0 ? nil : failed.errno,
                           spawn: failed)
    }

    /// The one reading of a spawn failure kind for people: a summary and what to try. The
    /// stage narrows it where one kind has several causes (`badArgs` from a user spec is not a
    /// NUL byte; `userSetupFailed` at stage `user` is a missing name, not a refused setuid).
    static func describe(_ kind: SpawnFailureKind, stage: SpawnStage? = nil) -> (summary: String, suggestion: String?) {
        switch kind {
        case .notFound: ("program not found", "check the program name and PATH inside the sandbox")
        case .permissionDenied: ("permission denied", "check the file's execute permission and the user the command runs as")
        case .notExecutable: ("not an executable", "the file is not a program this system can run (a directory, or a script without #!)")
        case .badCwd: ("cannot change to the working directory", "check that the working directory exists in the sandbox")
        case .badArgs:
            switch stage {
            case .user?: ("invalid user", "give the user as a name, uid, name:group or uid:gid")
            case .cwd?: ("invalid working directory", "give the working directory as a non-empty path without NUL bytes")
            case .rlimits?: ("invalid resource limit", "check the limit's name and that its soft value is at most its hard one")
            case .env?: ("invalid environment", "environment names and values must not contain NUL bytes, and names not '='")
            default: ("invalid arguments", "arguments must not contain NUL bytes or exceed the system's size limit")
            }
        case .resourceLimit: ("resource limit reached", "the sandbox is out of processes or descriptors; end some sessions or raise the limits")
        case .userSetupFailed:
            stage == .user
                ? ("no such user or group", "check the name against the sandbox's /etc/passwd and /etc/group")
                : ("cannot switch to the user", "the sandbox may not allow changing user (a user namespace without setgroups)")
        case .outOfMemory: ("out of memory", "the sandbox is out of memory")
        case .ptySetupFailed: ("cannot set up the terminal", "the sandbox may be out of pseudo-terminals; try without --tty")
        case .other, .unrecognized: ("the program did not start (\(kind))", nil)
        }
    }

    /// The one reading of a failure code for people: what to try next.
    static func defaultSuggestion(_ code: Code, spawn: Failed?) -> String? {
        if let spawn { return describe(spawn.kind, stage: spawn.stage).suggestion }
        switch code {
        case .relayUnreachable: return "start the relay (tether relay --agent ADDR --listen unix:PATH) or check --socket / TETHER_SOCKET"
        case .connectionClosed: return "the relay stopped or restarted; check its log and try again"
        case .timedOut: return "the relay or agent did not become ready in time; raise the retry budget or check the sandbox"
        case .remote(.agentNotReady): return "the sandbox is still starting or restarting; try again shortly"
        case .remote(.agentGone): return "the sandbox's agent went away (the VM stopped or crashed); check the sandbox and the relay's log"
        case .remote(.agentUnresponsive): return "the sandbox is overloaded or frozen; check it (tether ls, tether ping), wait and retry, or allow more time (--agent-timeout)"
        case .remote(.portAlreadyExposed): return "list exposed ports with `tether port ls`; unexpose the port first to change it"
        case .remote(.portNotExposed): return "list exposed ports with `tether port ls`"
        case .remote(.portInUse): return "another program on the host uses that address; pick another --host-port, or leave it out"
        case .remote(.serviceNotResponding): return "start the service in the sandbox first, bound to 127.0.0.1, ::1 or 0.0.0.0, or expose with --no-check"
        case .remote(.unknownSession): return "list sessions with `tether ps`"
        case .remote(.sessionInUse): return "only detached sessions that nobody watches can be attached"
        case .remote(.unsupported): return "use a client, relay and agent from the same release"
        case .remote(.tooManyClients):
            return "the relay has as many clients as it takes (tether relay --max-clients, ulimit -n); close some or try again later"
        case .connectionFailed, .spawnFailed, .invalidArgument, .cancelled, .protocolError, .internal, .remote: return nil
        }
    }
}
