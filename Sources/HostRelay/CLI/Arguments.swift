import TetherProtocol

/// A command line the user got wrong: exit status 2, printed with a pointer to the command's
/// `--help` (or, by the sandbox commands, with their usage).
struct UsageError: Error, CustomStringConvertible {
    var message: String
    /// The subcommand whose `--help` explains it; nil when the caller prints the usage itself.
    var command: String?

    init(message: String, command: String?) {
        self.message = message
        self.command = command
    }

    init(_ message: String) { self.init(message: message, command: nil) }

    var description: String { message }
}

/// One option a command takes.
struct OptionSpec {
    /// Every spelling: `-e`, `--env`.
    let names: [String]
    /// Takes a value (`--env K=V`, `--env=K=V`, `-eK=V`) rather than being a flag.
    let takesValue: Bool
    /// The canonical name results are stored under (the long name without dashes).
    var key: String { String((names.last ?? "").drop { $0 == "-" }) }

    init(_ names: String..., value: Bool = false) {
        self.names = names
        self.takesValue = value
    }
}

/// What a command line said, by option key.
struct ParsedArguments {
    var values: [String: [String]] = [:]
    var flags: Set<String> = []
    var positionals: [String] = []

    func value(_ key: String) -> String? { values[key]?.last }
    func all(_ key: String) -> [String] { values[key] ?? [] }
    func has(_ key: String) -> Bool { flags.contains(key) }
}

/// Parses arguments by hand, with the usual conventions: `--name value` and `--name=value`,
/// short options with the value attached or next (`-eK=V`, `-e K=V`), grouped short flags
/// (`-it`), repeatable options, and `--` to end options. With `stopAtFirstPositional` (exec),
/// everything from the first positional on belongs to the command being run.
func parseArguments(_ arguments: ArraySlice<String>, command: String, options: [OptionSpec],
                    stopAtFirstPositional: Bool = false) throws(UsageError) -> ParsedArguments {
    var result = ParsedArguments()
    var byName: [String: OptionSpec] = [:]
    for spec in options { for name in spec.names { byName[name] = spec } }
    var rest = arguments[...]

    func store(_ spec: OptionSpec, _ value: String?) {
        if let value { result.values[spec.key, default: []].append(value) } else { result.flags.insert(spec.key) }
    }

    while let argument = rest.popFirst() {
        if argument == "--" {
            result.positionals += rest
            break
        }
        if argument.hasPrefix("--") {
            let name: String
            var inline: String?
            if let equals = argument.firstIndex(of: "=") {
                name = String(argument[..<equals])
                inline = String(argument[argument.index(after: equals)...])
            } else {
                name = argument
            }
            guard let spec = byName[name] else { throw UsageError(message: "unknown option \(name)", command: command) }
            if spec.takesValue {
                if inline == nil { inline = rest.popFirst() }
                guard let value = inline else { throw UsageError(message: "\(name) needs a value", command: command) }
                store(spec, value)
            } else {
                guard inline == nil else { throw UsageError(message: "\(name) takes no value", command: command) }
                store(spec, nil)
            }
            continue
        }
        if argument.hasPrefix("-") && argument.count > 1 {
            // -e K=V, -eK=V, -it
            var letters = argument.dropFirst()
            while let letter = letters.popFirst() {
                let name = "-" + String(letter)
                guard let spec = byName[name] else { throw UsageError(message: "unknown option \(name)", command: command) }
                if spec.takesValue {
                    let attached = String(letters)
                    let value = attached.isEmpty ? rest.popFirst() : attached
                    guard let value else { throw UsageError(message: "\(name) needs a value", command: command) }
                    store(spec, value)
                    break
                }
                store(spec, nil)
            }
            continue
        }
        result.positionals.append(argument)
        if stopAtFirstPositional {
            result.positionals += rest
            break
        }
    }
    return result
}

/// `500ms`, `10s`, `2m`, `1h`, `1.5s`; a bare number is seconds.
func parseDuration(_ text: String, option: String, command: String?) throws(UsageError) -> Duration {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
    var number = Substring(text)
    var scale = 1.0
    for (suffix, factor) in units where text.hasSuffix(suffix) {
        number = text.dropLast(suffix.count)
        scale = factor
        break
    }
    guard let value = Double(number), value >= 0, value.isFinite else {
        throw UsageError(message: "\(option): '\(text)' is not a duration (like 500ms, 10s, 2m, 1h)", command: command)
    }
    return .nanoseconds(Int64(value * scale * 1e9))
}

/// `TERM`, `SIGTERM`, `term`, `15`.
func parseSignal(_ text: String, command: String) throws(UsageError) -> Int32 {
    if let number = Int32(text), (1...64).contains(number) { return number }
    var name = text.uppercased()
    if name.hasPrefix("SIG") { name = String(name.dropFirst(3)) }
    let names: [String: Int32] = [
        "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8, "KILL": 9, "USR1": 10,
        "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19,
        "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28,
        "IO": 29, "PWR": 30, "SYS": 31,
    ]
    guard let number = names[name] else {
        throw UsageError(message: "'\(text)' is not a signal (a number 1-64 or a name like TERM, KILL, INT)", command: command)
    }
    return number
}

/// A byte count: `1048576`, `64k`, `10M`, `1G` (binary units).
func parseByteCount(_ text: String, option: String, command: String) throws(UsageError) -> Int {
    let units: [(String, Int)] = [("k", 1 << 10), ("K", 1 << 10), ("m", 1 << 20), ("M", 1 << 20), ("g", 1 << 30), ("G", 1 << 30)]
    var number = Substring(text)
    var scale = 1
    for (suffix, factor) in units where text.hasSuffix(suffix) || text.hasSuffix(suffix + "iB") || text.hasSuffix(suffix + "B") {
        number = text.prefix { $0.isNumber }
        scale = factor
        break
    }
    guard let value = Int(number), value >= 0 else {
        throw UsageError(message: "\(option): '\(text)' is not a size (like 1048576, 64k, 10M)", command: command)
    }
    return value * scale
}

/// A session number as `tether ps` shows it.
func parseSession(_ text: String, command: String) throws(UsageError) -> UInt32 {
    guard let number = UInt32(text), number > 0 else {
        throw UsageError(message: "'\(text)' is not a session number (see tether ps)", command: command)
    }
    return number
}

/// `--seccomp default|restricted|none`: the profile, and for `none` the warning on stderr
/// (`tether: warning: ...`) that an explicit opt-out owes the user.
func parseSeccompProfile(_ text: String, command: String, scope: String) throws(UsageError) -> SeccompProfile {
    guard let profile = SeccompProfile(rawValue: text) else {
        throw UsageError(message: "--seccomp: '\(text)' is not a profile (\(SeccompProfile.spellings))", command: command)
    }
    if profile == .unfiltered {
        ErrorBlock.warning("--seccomp none: \(scope) without a seccomp filter (capabilities stay bounded, no_new_privs stays set)")
    }
    return profile
}

/// The `--seccomp` lines of exec's and shell's --help.
let seccompHelpLines = """
          --seccomp P       the seccomp profile (without it: the sandbox's, from `tether
                            boot --seccomp`, normally default): default (EPERM for mount,
                            open_by_handle_at, bpf, keyrings, namespaces, ...), restricted
                            (also ptrace, process_vm_*, chroot) or none (no filter; warns)
    """
