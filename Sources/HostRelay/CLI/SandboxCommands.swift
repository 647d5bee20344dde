#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherSandbox
import TetherPosix

/// `tether boot`, `tether ls`, `tether stop`, `tether rm` and the sandbox half of `tether run`:
/// argument parsing and printing. Booting, replacing and stopping are the library's
/// (`Sandbox` in TetherSandbox), so a Swift program and the CLI do them the same way.
enum SandboxCommands {
    /// The options `boot` and `run` share, in the parser's table (`bootOptions`).
    static let bootOptions: [OptionSpec] = [
        OptionSpec("--rootfs", value: true), OptionSpec("--name", value: true), OptionSpec("--backend", value: true),
        OptionSpec("--cpus", value: true), OptionSpec("--memory", value: true), OptionSpec("--pids", value: true),
        OptionSpec("--init", value: true), OptionSpec("--network", value: true), OptionSpec("--allow-net", value: true),
        OptionSpec("--ephemeral"),
        OptionSpec("--disk", value: true), OptionSpec("--replace"), OptionSpec("--replace-grace", value: true),
        OptionSpec("--handshake-timeout", value: true), OptionSpec("--hostname", value: true), OptionSpec("--log-stdin"),
        OptionSpec("--seccomp", value: true),
    ]

    /// The sandboxes of `$TETHER_HOME`, with the tools beside this executable.
    static func sandboxes() -> Sandboxes { SandboxOptions().sandboxes }

    /// The library's options from `boot`'s and `run`'s command line.
    static func sandboxOptions(_ parsed: ParsedArguments, command: String) throws -> SandboxOptions {
        var options = SandboxOptions(name: parsed.value("name"))
        if let name = options.name, !SandboxName.isValid(name) { throw SandboxError.invalidName(name) }
        if let rootfs = parsed.value("rootfs") { options.rootfs = .directory(rootfs) }
        if parsed.has("replace") {
            let grace = try parsed.value("replace-grace").map { try parseDuration($0, option: "--replace-grace", command: command) }
            options.onConflict = .replace(grace: grace ?? .seconds(10))
        } else if parsed.value("replace-grace") != nil {
            throw UsageError(message: "--replace-grace goes with --replace", command: command)
        }
        func integer(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
            guard let text = parsed.value(key) else { return nil }
            guard let number = Int(text), range.contains(number) else {
                throw UsageError(message: "--\(key) takes a number from \(range.lowerBound) to \(range.upperBound), not '\(text)'", command: command)
            }
            return number
        }
        var config = options.config
        if let text = parsed.value("backend") {
            guard let backend = BackendKind(rawValue: text) else {
                throw UsageError(message: "--backend must be namespace or krun, not '\(text)'", command: command)
            }
            config.backend = backend
        }
        config.cpus = try integer("cpus", in: 1...255)
        config.memoryMiB = try integer("memory", in: 16...(1 << 22))
        // Up to the kernel's largest pid_max (PID_MAX_LIMIT, 4194304).
        config.pidsLimit = try integer("pids", in: 1...(1 << 22))
        config.diskMiB = try integer("disk", in: 1...(1 << 24))
        if let text = parsed.value("init") {
            guard text == "auto" || text.hasPrefix("/") else {
                throw UsageError(message: "--init takes an absolute path in the guest or 'auto', not '\(text)'", command: command)
            }
            config.initSystem = text
        }
        if let text = parsed.value("network") {
            guard let network = NetworkMode(rawValue: text) else {
                throw UsageError(message: "--network must be none, egress or host, not '\(text)'", command: command)
            }
            config.network = network
        }
        for text in parsed.all("allow-net") {
            do { _ = try NetworkRange(parsing: text) } catch {
                throw UsageError(message: "--allow-net: \(error)", command: command)
            }
            config.allowNet = (config.allowNet ?? []) + [text]
        }
        config.ephemeral = parsed.has("ephemeral")
        if let text = parsed.value("handshake-timeout") {
            config.handshakeTimeoutMs = try parseDuration(text, option: "--handshake-timeout", command: command).milliseconds
        }
        config.hostname = parsed.value("hostname")
        if parsed.has("log-stdin") { config.logStdin = true }
        if let text = parsed.value("seccomp") {
            guard SandboxConfig.seccompProfiles.contains(text) else {
                throw UsageError(message: "--seccomp must be default, restricted or none, not '\(text)'", command: command)
            }
            if text == "none" {
                ErrorBlock.warning("--seccomp none: the sandbox's commands run without a seccomp filter unless they ask for one (capabilities stay bounded, no_new_privs stays set)")
            }
            config.seccomp = text
        }
        options.config = config
        DefaultRootfs.onProgress = { ErrorBlock.note($0) }
        return options
    }

    static func printBooted(_ state: SandboxState) {
        var lines = ["sandbox \(state.name) is running (\(state.backend.rawValue), pid \(state.sandboxPid.map(String.init) ?? "?"))"]
        if let ms = state.bootToHelloMs { lines.append("  agent said hello after \(String(format: "%.1f", ms)) ms") }
        if state.relayPid != nil {
            lines.append("  relay: unix:\(state.relaySocket)")
            lines.append("  run commands: tether exec --sandbox \(state.name) -- CMD   stop: tether stop \(state.name)")
        } else {
            lines.append("  no relay (see the warning); the agent: unix:\(state.agentSocket)   stop: tether stop \(state.name)")
        }
        writeStandardOutput(lines.joined(separator: "\n") + "\n")
        for warning in state.warnings { ErrorBlock.warning(warning) }
    }

    static func formatAge(_ seconds: Double) -> String {
        let s = Int(max(0, seconds))
        if s < 120 { return "\(s)s" }
        if s < 7200 { return "\(s / 60)m" }
        if s < 172_800 { return "\(s / 3600)h" }
        return "\(s / 86400)d"
    }

    /// The one positional argument `stop` and `rm` take.
    static func sandboxName(_ parsed: ParsedArguments, command: String) throws -> String {
        guard parsed.positionals.count == 1 else { throw UsageError(message: "tether \(command) takes one sandbox name", command: command) }
        return parsed.positionals[0]
    }
}

/// `tether boot`
enum BootCommand: Command {
    static let name = "boot"
    static let summary = "boot a sandbox and leave it running"
    static let help = """
        usage: tether boot --name NAME [--rootfs DIR] [--backend namespace|krun] [--cpus N] [--memory MiB]
                           [--init PATH|auto] [--network none|egress|host] [--allow-net CIDR]... [--ephemeral]
                           [--disk MiB] [--pids N]
                           [--replace [--replace-grace D]] [--handshake-timeout D] [--hostname NAME] [--log-stdin]
                           [--seccomp default|restricted|none] [--json]
        Boots a sandbox from DIR (default: the bundled guest tree, as `tether run` uses) and leaves
        it running in the background (its supervisor and relay stay with it); `tether exec
        --sandbox NAME -- CMD` runs commands in it, `tether stop NAME` ends it. D is a duration:
        500ms, 10s, 2m (a plain number is seconds).
          --name NAME          the sandbox's name (1-63 letters, digits, '.', '_', '-')
          --rootfs DIR         the guest's root directory (default: the bundled guest tree)
          --backend B          namespace (default: Linux namespaces, root) or krun (libkrun microVM)
          --cpus N, --memory M vCPUs and MiB (krun); cgroup limits where the host allows (namespace;
                               memory defaults to 1024 MiB)
          --pids N             at most N processes and threads (namespace; default 4096)
          --init PATH|auto     hand PID 1 to an init (systemd, OpenRC, busybox init); the agent keeps serving
          --network MODE       none: loopback only (default); egress: outbound TCP, UDP and DNS
                               through pasta (namespace backend; Debian's passt and nftables),
                               with the host's loopback, 169.254.0.0/16 (cloud metadata), private
                               ranges (RFC 1918, fc00::/7) and the like refused; host: the host's
                               network stack (warns: the sandbox then reaches the host's
                               127.0.0.1 services)
          --allow-net CIDR     with egress: let the guest reach this range although it is refused
                               by default (repeatable; a range holding 127.0.0.1 opens the
                               host's loopback at the gateway address 10.0.2.2)
          --ephemeral          the sandbox's writable layer is a tmpfs dropped at stop (namespace);
                               otherwise it stays with the name until `tether rm NAME`
          --disk MiB           the bound of the writable layer (default 1024; namespace)
          --replace            stop a running sandbox of that name first (TERM, grace, KILL)
          --replace-grace D    that grace (default 10s)
          --handshake-timeout D  how long the agent has to say hello (default 30s)
          --hostname NAME      the guest's host name (default: the sandbox's name)
          --log-stdin          the relay's exec.log records what clients send to stdin too (off by
                               default: a terminal session's stdin holds typed passwords)
          --seccomp P          the profile of commands that do not name one (tether exec --seccomp):
                               default (EPERM for mount, open_by_handle_at, bpf, keyrings,
                               namespaces, ...), restricted (also ptrace, process_vm_*, chroot),
                               none (no filter; warns). Commands get at most the default
                               capabilities and no_new_privs whatever the profile
        \(TetherCLI.commonHelpLines)

        """
    static let options = SandboxCommands.bootOptions

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            guard parsed.positionals.isEmpty else { throw UsageError(message: "unexpected argument \(parsed.positionals[0])", command: name) }
            guard parsed.value("name") != nil else { throw UsageError(message: "--name NAME is required", command: name) }
            let state = try Sandbox.launch(try SandboxCommands.sandboxOptions(parsed, command: name))
            SandboxCommands.printBooted(state)
            return 0
        }
    }
}

/// `tether stop`
enum StopCommand: Command {
    static let name = "stop"
    static let summary = "stop a sandbox (its init powers off), killing it after a grace"
    static let help = """
        usage: tether stop NAME [--grace D]
        Asks the sandbox to shut down (its init powers off, if it has one), waits the grace, then
        kills it.
          --grace D            how long it has to shut down (default 10s)
        \(TetherCLI.commonHelpLines)

        """
    static let options = [OptionSpec("--grace", value: true)]

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            let sandbox = try SandboxCommands.sandboxName(parsed, command: name)
            let grace = try parsed.value("grace").map { try parseDuration($0, option: "--grace", command: name) } ?? .seconds(10)
            switch try Sandbox.stop(sandbox, grace: grace, sandboxes: SandboxCommands.sandboxes()) {
            case .stopped(let exit):
                writeStandardOutput("sandbox \(sandbox) stopped" + (exit.map { ": \($0)" } ?? "") + "\n")
            case .killed:
                writeStandardOutput("sandbox \(sandbox) killed: it did not stop within the \(Duration.describe(milliseconds: grace.milliseconds)) grace\n")
            }
            return 0
        }
    }
}

/// `tether rm`
enum RemoveCommand: Command {
    static let name = "rm"
    static let summary = "remove a stopped sandbox: its state, logs and writable layer"
    static let help = """
        usage: tether rm NAME [--force [--grace D]]
        Removes a stopped sandbox: its state, logs and writable layer (what it wrote to its file
        system).
          -f, --force          stop a running one first
          --grace D            the grace of that stop (default 10s)
        \(TetherCLI.commonHelpLines)

        """
    static let options = [OptionSpec("-f", "--force"), OptionSpec("--grace", value: true)]

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            let sandbox = try SandboxCommands.sandboxName(parsed, command: name)
            let grace = try parsed.value("grace").map { try parseDuration($0, option: "--grace", command: name) } ?? .seconds(10)
            try SandboxCommands.sandboxes().remove(sandbox, stopFirst: parsed.has("force"), graceMs: grace.milliseconds)
            writeStandardOutput("sandbox \(sandbox) removed\n")
            return 0
        }
    }
}
