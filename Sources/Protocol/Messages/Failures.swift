/// The failure vocabulary every part shares: the code of an `error` frame (`ErrorCode`), why an
/// exec never started (`SpawnFailureKind`) and the step where it stopped (`SpawnStage`). Each is
/// defined here once; agent, relay, client and CLI switch on these cases, and the text form
/// (`rawValue`) exists for the wire, the exec log and the CLI's output only.
///
/// Each is an open set on the wire: a newer peer may send a name this build does not know, which
/// decodes as `.unrecognized(name)` and goes back out unchanged.

/// Machine-readable error codes carried by `error` frames.
public enum ErrorCode: Hashable, Sendable, CaseIterableWire, CustomStringConvertible {
    /// The peer speaks no protocol version we can.
    case unsupported
    /// A frame length outside 6 ... 1 MiB + 6; the connection is closed after this.
    case framing
    /// A payload that is not the message its kind says.
    case badPayload
    /// A kind the receiver does not handle (on that id).
    case unknownKind
    /// A frame for a session id that is not open.
    case unknownSession
    /// A START frame for an id that is still in use.
    case sessionInUse
    /// A bounded table (sessions, connections) is full.
    case limitReached
    /// The agent is shutting down and takes no new sessions.
    case shuttingDown
    /// The relay has heard nothing from the agent for longer than its liveness timeout.
    case agentUnresponsive
    /// The relay's connection to the agent is gone; the session's fate is unknown.
    case agentGone
    /// The relay is (re)connecting to its agent; the request did not reach it. Transient.
    case agentNotReady
    /// The peer broke the protocol in a way that is not one of the above.
    case protocolViolation
    /// The receiver failed for a reason of its own (a syscall failed); `errno` says which.
    case `internal`
    /// A request from a client that has not sent its `hello` yet; the request did not run.
    case helloRequired
    /// The relay takes no more clients (its `--max-clients` cap, or its descriptor limit when
    /// `errno` is EMFILE or ENFILE); sent on id 0, then the connection is closed.
    case tooManyClients
    /// `processStart` with a name a process already has (running, or ended and not removed).
    case processNameInUse
    /// A process request naming no process.
    case processNotFound
    /// `processRemove` of a process that still runs (or may restart).
    case processRunning
    /// `processFailed`: the readiness conditions did not all hold within `waitTimeoutMs`.
    case processReadyTimeout
    /// `processFailed`: the process exited before its conditions held, and no restart was left.
    case processExitedBeforeReady
    /// A port outside 1-65535, or one that is reserved; the message says which and why.
    case invalidPort
    /// The guest port is exposed already; the message names its host address and label.
    case portAlreadyExposed
    /// `unexposePort` of a guest port that is not exposed.
    case portNotExposed
    /// The host address and port are taken (bind(2) said EADDRINUSE).
    case portInUse
    /// Nothing listens on the guest port; the message names what listens and where.
    case serviceNotResponding
    /// One tunnelled connection: the agent could not connect to the guest port; the message
    /// names every address it tried.
    case connectionRefused
    /// A code this build does not know.
    case unrecognized(String)

    public static let known: [ErrorCode] = [
        .unsupported, .framing, .badPayload, .unknownKind, .unknownSession, .sessionInUse, .limitReached,
        .shuttingDown, .agentUnresponsive, .agentGone, .agentNotReady, .protocolViolation, .internal,
        .helloRequired, .tooManyClients,
        .processNameInUse, .processNotFound, .processRunning, .processReadyTimeout, .processExitedBeforeReady,
        .invalidPort, .portAlreadyExposed, .portNotExposed, .portInUse, .serviceNotResponding, .connectionRefused,
    ]

    public init(from decoder: any Decoder) throws { try self.init(wireNameFrom: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeWireName(to: encoder) }

    public var rawValue: String {
        switch self {
        case .unsupported: "unsupported"
        case .framing: "framing"
        case .badPayload: "badPayload"
        case .unknownKind: "unknownKind"
        case .unknownSession: "unknownSession"
        case .sessionInUse: "sessionInUse"
        case .limitReached: "limitReached"
        case .shuttingDown: "shuttingDown"
        case .agentUnresponsive: "agentUnresponsive"
        case .agentGone: "agentGone"
        case .agentNotReady: "agentNotReady"
        case .protocolViolation: "protocolViolation"
        case .internal: "internal"
        case .helloRequired: "helloRequired"
        case .tooManyClients: "tooManyClients"
        case .processNameInUse: "processNameInUse"
        case .processNotFound: "processNotFound"
        case .processRunning: "processRunning"
        case .processReadyTimeout: "processReadyTimeout"
        case .processExitedBeforeReady: "processExitedBeforeReady"
        case .invalidPort: "invalidPort"
        case .portAlreadyExposed: "portAlreadyExposed"
        case .portNotExposed: "portNotExposed"
        case .portInUse: "portInUse"
        case .serviceNotResponding: "serviceNotResponding"
        case .connectionRefused: "connectionRefused"
        case .unrecognized(let name): name
        }
    }
}

/// Why an exec never started (the `kind` of a `failed` event).
public enum SpawnFailureKind: Hashable, Sendable, CaseIterableWire, CustomStringConvertible {
    /// ENOENT or ENOTDIR at exec.
    case notFound
    /// EACCES or EPERM.
    case permissionDenied
    /// ENOEXEC or EISDIR.
    case notExecutable
    /// chdir failed.
    case badCwd
    /// E2BIG, empty argv, a NUL in a string, an unknown rlimit name.
    case badArgs
    /// EMFILE, EAGAIN, setrlimit.
    case resourceLimit
    /// The user could not be had: not in the guest's /etc/passwd or /etc/group (stage `user`,
    /// the message names what was missing), or setgroups, setgid or setuid failed.
    case userSetupFailed
    case outOfMemory
    case ptySetupFailed
    case other
    /// A kind this build does not know.
    case unrecognized(String)

    public static let known: [SpawnFailureKind] = [
        .notFound, .permissionDenied, .notExecutable, .badCwd, .badArgs, .resourceLimit,
        .userSetupFailed, .outOfMemory, .ptySetupFailed, .other,
    ]

    public init(from decoder: any Decoder) throws { try self.init(wireNameFrom: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeWireName(to: encoder) }

    public var rawValue: String {
        switch self {
        case .notFound: "notFound"
        case .permissionDenied: "permissionDenied"
        case .notExecutable: "notExecutable"
        case .badCwd: "badCwd"
        case .badArgs: "badArgs"
        case .resourceLimit: "resourceLimit"
        case .userSetupFailed: "userSetupFailed"
        case .outOfMemory: "outOfMemory"
        case .ptySetupFailed: "ptySetupFailed"
        case .other: "other"
        case .unrecognized(let name): name
        }
    }
}

/// The step of a spawn that failed (the `stage` of a `failed` event), in the order the agent
/// takes them: checks of the request, set-up in the agent, the fork, then the child's steps up
/// to execve.
public enum SpawnStage: Hashable, Sendable, CaseIterableWire, CustomStringConvertible {
    // Checks and set-up in the agent, before fork.
    case argv, env, cwd, user, rlimits, stdin, pipes
    // The pseudo-terminal (posix_openpt, unlockpt, the slave, TIOCSWINSZ, O_NONBLOCK).
    case openpt, unlockpt, openSlave, winsize, ptyNonblock
    // In the agent: the report pipe, the fork itself.
    case reportPipe, fork
    // In the child, in order.
    case signals, setsid, controllingTty, stdio, setrlimit, capabilityBound, capabilitySets,
         setgroups, setgid, setuid, chdir, closeFds, noNewPrivs, seccomp, exec
    /// No stage was reported (an older agent), or one this build does not know.
    case unrecognized(String)

    public static let known: [SpawnStage] = [
        .argv, .env, .cwd, .user, .rlimits, .stdin, .pipes,
        .openpt, .unlockpt, .openSlave, .winsize, .ptyNonblock, .reportPipe, .fork,
        .signals, .setsid, .controllingTty, .stdio, .setrlimit, .capabilityBound, .capabilitySets,
        .setgroups, .setgid, .setuid, .chdir, .closeFds, .noNewPrivs, .seccomp, .exec,
    ]

    public init(from decoder: any Decoder) throws { try self.init(wireNameFrom: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeWireName(to: encoder) }

    public var rawValue: String {
        switch self {
        case .argv: "argv"
        case .env: "env"
        case .cwd: "cwd"
        case .user: "user"
        case .rlimits: "rlimits"
        case .stdin: "stdin"
        case .pipes: "pipes"
        case .openpt: "openpt"
        case .unlockpt: "unlockpt"
        case .openSlave: "openSlave"
        case .winsize: "winsize"
        case .ptyNonblock: "ptyNonblock"
        case .reportPipe: "reportPipe"
        case .fork: "fork"
        case .signals: "signals"
        case .setsid: "setsid"
        case .controllingTty: "controllingTty"
        case .stdio: "stdio"
        case .setrlimit: "setrlimit"
        case .capabilityBound: "capabilityBound"
        case .capabilitySets: "capabilitySets"
        case .setgroups: "setgroups"
        case .setgid: "setgid"
        case .setuid: "setuid"
        case .chdir: "chdir"
        case .closeFds: "closeFds"
        case .noNewPrivs: "noNewPrivs"
        case .seccomp: "seccomp"
        case .exec: "exec"
        case .unrecognized(let name): name
        }
    }
}

/// An enum whose wire form is its name: `known` lists every named case, and any other name
/// becomes `.unrecognized`, so decoding never fails on a name from a newer peer.
public protocol CaseIterableWire: Codable {
    static var known: [Self] { get }
    static func unrecognized(_ name: String) -> Self
    var rawValue: String { get }
}

extension CaseIterableWire {
    public init(rawValue: String) {
        self = Self.known.first { $0.rawValue == rawValue } ?? .unrecognized(rawValue)
    }
    public var description: String { rawValue }

    /// Decoded from its name, as on the wire (JSON output of the client library). Each enum
    /// calls this from its own `init(from:)`: written there, it keeps the compiler from
    /// synthesizing the keyed form of an enum with an associated value.
    init(wireNameFrom decoder: any Decoder) throws {
        self.init(rawValue: try decoder.singleValueContainer().decode(String.self))
    }

    func encodeWireName(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}
