import Foundation
import TetherProtocol

/// Every failure the client library reports. A program that exits non-zero is not an error
/// (`ExecOutput.exitCode`); a program that never started is (`code == .spawnFailed`, with
/// `spawn` saying kind, errno and stage).
///
/// Encodes to JSON (`json`) with every field, for tools that log or forward errors.
public struct TetherError: Error, Sendable, Equatable, Codable, CustomStringConvertible {
    /// What kind of failure. Wire error codes (`agentGone`, `unknownSession`, ...) keep their
    /// names; the library adds its own (`relayUnreachable`, `spawnFailed`, ...). An open set.
    public struct Code: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public init(_ wire: ErrorCode) { rawValue = wire.rawValue }
        public var description: String { rawValue }

        /// The relay's socket is not there or nobody listens on it (retried within the budget).
        public static let relayUnreachable = Code(rawValue: "relayUnreachable")
        /// The connection to the relay ended while something was in flight.
        public static let connectionClosed = Code(rawValue: "connectionClosed")
        /// The program never started; see `spawn`.
        public static let spawnFailed = Code(rawValue: "spawnFailed")
        /// The caller asked for something that cannot be done (bad argument, stdin taken twice).
        public static let invalidArgument = Code(rawValue: "invalidArgument")
        /// The task was cancelled while waiting.
        public static let cancelled = Code(rawValue: "cancelled")
        /// The retry budget ran out while the failure was still transient.
        public static let timedOut = Code(rawValue: "timedOut")
        /// The relay sent something this library cannot read.
        public static let protocolError = Code(rawValue: "protocolError")

        // Wire codes (DESIGN.md, `ErrorCode`).
        public static let agentNotReady = Code(.agentNotReady)
        public static let agentGone = Code(.agentGone)
        public static let agentUnresponsive = Code(.agentUnresponsive)
        public static let unknownSession = Code(.unknownSession)
        public static let sessionInUse = Code(.sessionInUse)
        public static let unsupported = Code(.unsupported)
        public static let badPayload = Code(.badPayload)
        public static let unknownKind = Code(.unknownKind)
        public static let limitReached = Code(.limitReached)
        public static let shuttingDown = Code(.shuttingDown)
        public static let protocolViolation = Code(.protocolViolation)
        public static let `internal` = Code(.internal)
        public static let helloRequired = Code(.helloRequired)
        public static let tooManyClients = Code(.tooManyClients)
    }

    /// Why a program did not start, as the agent reported it.
    public struct SpawnFailure: Sendable, Equatable, Codable {
        /// `notFound`, `permissionDenied`, `notExecutable`, `badCwd`, `badArgs`, ...
        public var kind: String
        public var errno: Int32
        /// The step in the child that failed (`exec`, `chdir`, `setuid`, ...).
        public var stage: String
        public var message: String

        public init(_ failed: Failed) {
            kind = failed.kind.rawValue
            errno = failed.errno
            stage = failed.stage
            message = failed.message
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
    public var spawn: SpawnFailure?

    public init(_ code: Code, _ message: String, operation: String, context: [String: String] = [:],
                suggestion: String? = nil, errno: Int32? = nil, spawn: SpawnFailure? = nil, timestamp: Date = Date()) {
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
    public var isTransient: Bool { code == .relayUnreachable || code == .agentNotReady }

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

    static func defaultSuggestion(_ code: Code, spawn: SpawnFailure?) -> String? {
        if let spawn {
            switch spawn.kind {
            case "notFound": return "check the program name and PATH inside the sandbox"
            case "permissionDenied": return "check the file's execute permission and the user the command runs as"
            case "notExecutable": return "the file is not a program this system can run (a directory, or a script without #!)"
            case "badCwd": return "check that the working directory exists in the sandbox"
            case "userNotFound": return "check the user name against the sandbox's /etc/passwd"
            case "badArgs": return "arguments must not contain NUL bytes or exceed the system's size limit"
            case "resourceLimit": return "the sandbox is out of processes or descriptors; end some sessions or raise the limits"
            case "outOfMemory": return "the sandbox is out of memory"
            default: return nil
            }
        }
        switch code {
        case .relayUnreachable: return "start the relay (tether relay --agent ADDR --listen unix:PATH) or check --socket / TETHER_SOCKET"
        case .connectionClosed: return "the relay stopped or restarted; check its log and try again"
        case .agentNotReady: return "the sandbox is still starting or restarting; try again shortly"
        case .agentGone: return "the sandbox's agent went away (the VM stopped or crashed); check the sandbox and the relay's log"
        case .agentUnresponsive: return "the sandbox is overloaded or frozen; check it, or wait and retry"
        case .unknownSession: return "list sessions with `tether ps`"
        case .sessionInUse: return "only detached sessions that nobody watches can be attached"
        case .timedOut: return "the relay or agent did not become ready in time; raise the retry budget or check the sandbox"
        case .unsupported: return "use a client, relay and agent from the same release"
        case .tooManyClients: return "the relay has as many clients as it takes (tether relay --max-clients, ulimit -n); close some or try again later"
        default: return nil
        }
    }
}
