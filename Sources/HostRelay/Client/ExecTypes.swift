import TetherProtocol
import TetherPosix

/// How a program ended: an exit code, or the signal that killed it.
public struct ExitStatus: Sendable, Hashable, Codable, CustomStringConvertible {
    public var code: Int32?
    public var signal: Int32?
    public var coreDumped: Bool
    /// The request's timeout ran out and the agent signalled the program (`code` or `signal`
    /// say how it then ended). `exec` throws `timedOut` for it; streams carry it here.
    public var timedOut: Bool

    public init(code: Int32? = nil, signal: Int32? = nil, coreDumped: Bool = false, timedOut: Bool = false) {
        self.code = code
        self.signal = signal
        self.coreDumped = coreDumped
        self.timedOut = timedOut
    }

    init(_ exited: Exited) {
        self.init(code: exited.code, signal: exited.signal, coreDumped: exited.coreDumped, timedOut: exited.timedOut)
    }

    /// The shell's convention: the code, or 128 + the signal number.
    public var shellStatus: Int32 { code ?? (128 + (signal ?? 0)) }
    public var success: Bool { code == 0 }

    /// How the program itself ended, timeout or not: "exit code 3", "killed by signal 15".
    public var ending: String {
        code.map { "exit code \($0)" } ?? "killed by signal \(signal ?? 0)" + (coreDumped ? " (core dumped)" : "")
    }

    public var description: String { timedOut ? "timed out (\(ending))" : ending }
}

/// What `exec` returns once the program ended. A non-zero exit is a result, not an error.
public struct ExecOutput: Sendable, Hashable {
    public var stdout: [UInt8]
    public var stderr: [UInt8]
    public var status: ExitStatus
    /// `status.shellStatus`: the exit code, or 128 + N when killed by signal N.
    public var exitCode: Int32 { status.shellStatus }
    public var success: Bool { status.success }

    public init(stdout: [UInt8], stderr: [UInt8], status: ExitStatus) {
        self.stdout = stdout
        self.stderr = stderr
        self.status = status
    }

    /// stdout as text (invalid UTF-8 replaced).
    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
}

/// One event of a running session, in the order the agent sent them. The sequence ends after
/// the agent's `done`; a session that ends otherwise (spawn failure, agent gone) throws.
public enum ExecEvent: Sendable, Hashable {
    case started(pid: Int32)
    case stdout([UInt8])
    case stderr([UInt8])
    /// Writing to the program's stdin failed (EPIPE: it closed its end). Not the end.
    case stdinError(errno: Int32, message: String)
    case exited(ExitStatus)
}

/// Options of `exec`, `execStream`, `shell` (the `exec` request's keys, `ExecRequest`).
public struct ExecOptions: Sendable {
    public var env: [String: String] = [:]
    public var cwd: String?
    /// A user name, a numeric uid, or `user:group`.
    public var user: String?
    /// Run on a pseudo-terminal of this size.
    public var tty: TerminalSize?
    /// Give the program a stdin pipe (`takeStdin()`); otherwise it reads /dev/null.
    public var stdin = false
    /// After this long the agent sends SIGTERM, then SIGKILL after `killGrace`.
    public var timeout: Duration?
    public var killGrace: Duration?
    public var drain: Duration?
    public var rlimits: [String: ResourceLimit] = [:]
    /// Keep running after this client goes away; `attach` picks it up again.
    public var detach = false
    public var seccomp: SeccompProfile?

    public init(env: [String: String] = [:], cwd: String? = nil, user: String? = nil, tty: TerminalSize? = nil,
                stdin: Bool = false, timeout: Duration? = nil, detach: Bool = false) {
        self.env = env
        self.cwd = cwd
        self.user = user
        self.tty = tty
        self.stdin = stdin
        self.timeout = timeout
        self.detach = detach
    }

    /// The wire request for `argv` with these options.
    public func request(_ argv: [String]) -> ExecRequest {
        var env: [OSString: OSString] = [:]
        for (name, value) in self.env { env[OSString(name)] = OSString(value) }
        return ExecRequest(argv: argv.map { OSString($0) }, env: env, cwd: cwd.map { OSString($0) }, user: user, tty: tty,
                           stdin: stdin ? .pipe : .none, timeoutMs: timeout.map(\.milliseconds),
                           killGraceMs: killGrace.map(\.milliseconds) ?? ExecRequest.defaultKillGraceMs,
                           drainMs: drain.map(\.milliseconds) ?? ExecRequest.defaultDrainMs,
                           rlimits: rlimits, detach: detach, seccomp: seccomp)
    }
}

/// Where to connect and how hard to try.
public struct ClientOptions: Sendable {
    /// The relay's socket (`unix:PATH`).
    public var socket: Address
    /// The name in this client's hello.
    public var name = "tether-client"
    /// Transient failures (no relay socket yet, agent not ready yet) are retried for this long.
    public var retryBudget: Duration = .seconds(10)
    public var retryInitialDelay: Duration = .milliseconds(20)
    public var retryMaxDelay: Duration = .seconds(1)
    /// How long a connected socket may stay silent before its hello: an agent serves one
    /// connection at a time, so a second client of one agent would otherwise wait forever.
    public var helloTimeout: Duration = .seconds(10)
    /// News about the connection that ends no session, such as `agentUnresponsive` (the
    /// relay has not heard from its agent for a while; running sessions keep waiting, since
    /// it may come back). Called on the connection's thread; keep it short.
    public var onNotice: (@Sendable (TetherError) -> Void)?
    /// How long an exec or attach session waits on an agent that answers nothing (not even the
    /// pings the connection sends through the relay while sessions are open) before every
    /// session of the connection fails with `agentUnresponsive`. nil: wait for ever.
    public var agentTimeout: Duration? = .seconds(10)

    public init(socket: Address) { self.socket = socket }
}
