/// Where the child's stdin comes from.
public enum StdinMode: String, Sendable {
    /// /dev/null (the default).
    case none
    /// A pipe fed by `stdin` frames; an empty `stdin` frame with END closes it.
    case pipe
}

public struct TerminalSize: Hashable, Sendable {
    public var rows: UInt16
    public var cols: UInt16
    public init(rows: UInt16, cols: UInt16) {
        self.rows = rows
        self.cols = cols
    }
}

/// The seccomp profile a command runs under (see SECCOMP.md). Whatever the profile, the
/// command's bounding set holds at most the default capabilities and no_new_privs is set.
public enum SeccompProfile: String, Sendable, CaseIterable {
    /// EPERM for what container runtimes refuse by default: the mount family, opening files
    /// by handle, keyrings, bpf, perf_event_open, userfaultfd, kexec, modules, setting the
    /// clock, reboot, swap, io_uring, namespaces (unshare, clone, setns), unusual
    /// personalities, ...
    case `default`
    /// Everything `default` refuses, and also ptrace, process_vm_readv/writev, chroot and
    /// adjusting the clock.
    case restricted
    /// No filter at all: an explicit opt-out, which the agent and the CLI warn about. (Not
    /// called `none`, which an optional profile would confuse with Optional.none.)
    case unfiltered = "none"

    /// The spellings, for messages: `default, restricted or none`.
    public static let spellings = "default, restricted or none"
}

/// A resource limit as setrlimit(2) takes it; nil means unlimited (RLIM_INFINITY).
public struct ResourceLimit: Hashable, Sendable {
    public var soft: UInt64?
    public var hard: UInt64?
    public init(soft: UInt64?, hard: UInt64?) {
        self.soft = soft
        self.hard = hard
    }
}

/// `exec` (START on a new session id): run a program.
public struct ExecRequest: Message {
    public static let kind = FrameKind.exec
    public static let defaultKillGraceMs: UInt64 = 2000
    public static let defaultDrainMs: UInt64 = 250

    /// argv[0] is the program: a path, or a name looked up in the child's PATH.
    public var argv: [OSString]
    /// Merged over the agent's defaults (PATH, HOME, USER, TERM).
    public var env: [OSString: OSString]
    public var cwd: OSString?
    /// A user name, a numeric uid, or `user:group`.
    public var user: String?
    /// Run on a new pseudo-terminal of this size.
    public var tty: TerminalSize?
    public var stdin: StdinMode
    /// After this long the session's process group gets SIGTERM, then SIGKILL after `killGraceMs`.
    public var timeoutMs: UInt64?
    public var killGraceMs: UInt64
    /// How long output of descendants that keep the pipes open is still forwarded after `exited`.
    public var drainMs: UInt64
    /// setrlimit(2) by name (`nofile`, `nproc`, `as`, ...). An unknown name fails the exec.
    public var rlimits: [String: ResourceLimit]
    /// Keep running when the client goes away.
    public var detach: Bool
    /// nil: the agent's default profile (`--seccomp`, itself "default" unless set).
    public var seccomp: SeccompProfile?

    public init(argv: [OSString], env: [OSString: OSString] = [:], cwd: OSString? = nil, user: String? = nil,
                tty: TerminalSize? = nil, stdin: StdinMode = .none, timeoutMs: UInt64? = nil,
                killGraceMs: UInt64 = ExecRequest.defaultKillGraceMs, drainMs: UInt64 = ExecRequest.defaultDrainMs,
                rlimits: [String: ResourceLimit] = [:], detach: Bool = false, seccomp: SeccompProfile? = nil) {
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.user = user
        self.tty = tty
        self.stdin = stdin
        self.timeoutMs = timeoutMs
        self.killGraceMs = killGraceMs
        self.drainMs = drainMs
        self.rlimits = rlimits
        self.detach = detach
        self.seccomp = seccomp
    }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("argv") { w in
            w.arrayHeader(count: argv.count)
            for arg in argv { arg.write(to: &w) }
        }
        if !env.isEmpty {
            map.entry("env") { w in
                w.mapHeader(count: env.count)
                // Sorted, so the same request always encodes to the same bytes.
                for (name, value) in env.sorted(by: { $0.key.bytes.lexicographicallyPrecedes($1.key.bytes) }) {
                    name.write(to: &w)
                    value.write(to: &w)
                }
            }
        }
        if let cwd { map.entry("cwd") { w in cwd.write(to: &w) } }
        map.entry("user", user)
        if let tty {
            map.entry("tty") { w in
                w.map { m in
                    m.entry("rows", tty.rows)
                    m.entry("cols", tty.cols)
                }
            }
        }
        map.entry("stdin", stdin.rawValue)
        map.entry("timeoutMs", timeoutMs)
        map.entry("killGraceMs", killGraceMs)
        map.entry("drainMs", drainMs)
        if !rlimits.isEmpty {
            map.entry("rlimits") { w in
                w.mapHeader(count: rlimits.count)
                for (name, limit) in rlimits.sorted(by: { $0.key < $1.key }) {
                    w.text(name)
                    w.arrayHeader(count: 2)
                    if let soft = limit.soft { w.unsigned(soft) } else { w.null() }
                    if let hard = limit.hard { w.unsigned(hard) } else { w.null() }
                }
            }
        }
        map.entry("detach", detach)
        map.entry("seccomp", seccomp?.rawValue)
    }

    public init(from r: MessageReader) throws(MessageError) {
        let argvValue = try r.value("argv")
        guard case .array(let items) = argvValue else {
            throw .wrongType(key: "argv", expected: "an array of strings", found: argvValue.typeName)
        }
        argv = []
        argv.reserveCapacity(items.count)
        for item in items { argv.append(try OSString(cbor: item, key: "argv")) }

        env = [:]
        if let envMap = try r.optionalMap("env") {
            for entry in envMap.entries {
                let name = try OSString(cbor: entry.key, key: "env")
                guard env[name] == nil else { throw .invalidValue(key: "env", reason: "'\(name)' is given twice") }
                env[name] = try OSString(cbor: entry.value, key: "env.\(name)")
            }
        }
        cwd = try r.optionalOSString("cwd")
        user = try r.optionalText("user")
        if let t = try r.optionalReader("tty") {
            tty = TerminalSize(rows: try t.integer("rows"), cols: try t.integer("cols"))
        } else {
            tty = nil
        }
        if let mode = try r.optionalText("stdin") {
            guard let parsed = StdinMode(rawValue: mode) else {
                throw .invalidValue(key: "stdin", reason: "must be \"none\" or \"pipe\", not \"\(mode)\"")
            }
            stdin = parsed
        } else {
            stdin = .none
        }
        timeoutMs = try r.optionalInteger("timeoutMs")
        killGraceMs = try r.optionalInteger("killGraceMs") ?? Self.defaultKillGraceMs
        drainMs = try r.optionalInteger("drainMs") ?? Self.defaultDrainMs
        rlimits = [:]
        if let limits = try r.optionalMap("rlimits") {
            for entry in limits.entries {
                guard case .text(let name) = entry.key else {
                    throw .wrongType(key: "rlimits", expected: "a map with text keys", found: entry.key.typeName)
                }
                let key = "rlimits.\(name)"
                guard case .array(let pair) = entry.value, pair.count == 2 else {
                    throw .wrongType(key: key, expected: "an array [soft, hard]", found: entry.value.typeName)
                }
                func bound(_ value: CBORValue) throws(MessageError) -> UInt64? {
                    value == .null ? nil : try MessageReader.integer(value, key: key)
                }
                rlimits[name] = ResourceLimit(soft: try bound(pair[0]), hard: try bound(pair[1]))
            }
        }
        detach = try r.optionalBool("detach") ?? false
        if let profile = try r.optionalText("seccomp") {
            guard let parsed = SeccompProfile(rawValue: profile) else {
                throw .invalidValue(key: "seccomp", reason: "must be \"default\", \"restricted\" or \"none\", not \"\(profile)\"")
            }
            seccomp = parsed
        } else {
            seccomp = nil
        }
    }
}
