#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherBoot
import TetherPosix

/// `tether boot`, `tether ls`, `tether stop` and the sandbox half of `tether run`: sandboxes under
/// `$TETHER_HOME` (see TetherBoot's `Sandboxes`).
enum SandboxCommands {
    static let bootUsage = """
        usage: tether boot --name NAME [--rootfs DIR] [--backend namespace|krun] [--cpus N] [--memory MiB]
                           [--init PATH|auto] [--network none|egress|host] [--allow-net CIDR]... [--ephemeral] [--disk MiB] [--pids N]
                           [--replace [--replace-grace D]] [--handshake-timeout D] [--hostname NAME] [--log-stdin]
                           [--seccomp default|restricted|none]
        Boots a sandbox from DIR (default: the bundled guest tree, as `tether run` uses) and leaves
        it running in the background (its supervisor and relay stay with it); `tether exec --sandbox NAME -- CMD` runs commands in it, `tether stop NAME`
        ends it. D is a duration: 500ms, 10s, 2m (a plain number is seconds).
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
          --replace            stop a running sandbox of that name first (TERM, grace, KILL);
                               --replace-grace D is that grace (default 10s)
          --handshake-timeout D  how long the agent has to say hello (default 30s)
          --hostname NAME      the guest's host name (default: the sandbox's name)
          --log-stdin          the relay's exec.log records what clients send to stdin too (off by
                               default: a terminal session's stdin holds typed passwords)
          --seccomp P          the profile of commands that do not name one (tether exec --seccomp):
                               default (EPERM for mount, open_by_handle_at, bpf, keyrings,
                               namespaces, ...), restricted (also ptrace, process_vm_*, chroot),
                               none (no filter; warns). Commands get at most the default
                               capabilities and no_new_privs whatever the profile
        """
    static let lsUsage = """
        usage: tether ls
        Lists the sandboxes under $TETHER_HOME (default ~/.tether): name, status, backend, pid, age, rootfs.
        """
    static let rmUsage = """
        usage: tether rm NAME [--force [--grace D]]
        Removes a stopped sandbox: its state, logs and writable layer (what it wrote to its file
        system). --force stops a running one first.
        """
    static let stopUsage = """
        usage: tether stop NAME [--grace D]
        Asks the sandbox to shut down (its init powers off, if it has one), waits the grace (default
        10s), then kills it.
        """

    /// The sandboxes of `$TETHER_HOME`, with `tether-sandbox` found beside this executable.
    static func sandboxes() -> Sandboxes {
        Sandboxes(home: TetherHome.fromEnvironment(), supervisorExecutable: sibling("tether-sandbox"))
    }

    /// A program built beside this one (`.build/debug/tether-sandbox`, ...).
    static func sibling(_ name: String) -> String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent(name).path
    }

    // MARK: boot

    static func boot(_ arguments: [String]) -> Int32 {
        var parser = SandboxArguments(arguments)
        var options = BootOptions()
        var config: SandboxConfig
        do {
            guard try options.parse(&parser) else {
                print(bootUsage)
                return 0
            }
            guard parser.remaining.isEmpty else { throw UsageError("unexpected argument \(parser.remaining[0])") }
            guard let name = options.name else { throw UsageError("--name NAME is required") }
            config = options.config
            config.name = name
        } catch {
            return usageError(error, usage: bootUsage)
        }
        guard let rootfs = resolveRootfs(options) else { return CLIExit.failure }
        config.rootfs = rootfs
        do {
            let state = try sandboxes().boot(config, onConflict: options.onConflict)
            printBooted(state)
            return 0
        } catch {
            return report(error)
        }
    }

    /// `--rootfs` made absolute, or (without it) the default guest tree; nil once the reason it
    /// cannot be had is on stderr.
    static func resolveRootfs(_ options: BootOptions) -> String? {
        do {
            return try options.rootfs.map(absolute) ?? defaultRootfs()
        } catch {
            FileHandle.standardError.write(Data("tether: \(error)\n".utf8))
            return nil
        }
    }

    /// What `boot` and `run` both read before the sandbox's name and command.
    struct BootOptions {
        var rootfs: String?
        var name: String?
        var config = SandboxConfig(name: "", rootfs: "", relayExecutable: sibling("tether"))
        var replace = false
        var replaceGraceMs: UInt64 = 10_000

        var onConflict: Sandboxes.Conflict { replace ? .replace(graceMs: replaceGraceMs) : .fail }

        /// Reads every option the parser has; false when `--help` was asked for.
        mutating func parse(_ parser: inout SandboxArguments) throws -> Bool {
            while let option = try parser.nextOption() {
                switch option {
                case "--rootfs": rootfs = try parser.value(for: option)
                case "--name": name = try parser.value(for: option)
                case "--replace": replace = true
                case "--replace-grace": replaceGraceMs = try parser.duration(for: option)
                case "-h", "--help": return false
                default:
                    guard try applyCommon(option, &parser, &config) else { throw UsageError("unknown option \(option)") }
                }
            }
            return true
        }
    }

    /// Options `boot` and `run` share. Returns false for an option it does not know.
    static func applyCommon(_ option: String, _ parser: inout SandboxArguments, _ config: inout SandboxConfig) throws -> Bool {
        switch option {
        case "--backend":
            let text = try parser.value(for: option)
            guard let backend = BackendKind(rawValue: text) else { throw UsageError("--backend must be namespace or krun, not '\(text)'") }
            config.backend = backend
        case "--cpus":
            config.cpus = try parser.integer(for: option, in: 1...255)
        case "--memory":
            config.memoryMiB = try parser.integer(for: option, in: 16...(1 << 22))
        case "--pids":
            // Up to the kernel's largest pid_max (PID_MAX_LIMIT, 4194304).
            config.pidsLimit = try parser.integer(for: option, in: 1...(1 << 22))
        case "--init":
            let text = try parser.value(for: option)
            guard text == "auto" || text.hasPrefix("/") else { throw UsageError("--init takes an absolute path in the guest or 'auto'") }
            config.initSystem = text
        case "--network":
            let text = try parser.value(for: option)
            guard let network = NetworkMode(rawValue: text) else { throw UsageError("--network must be none, egress or host, not '\(text)'") }
            config.network = network
        case "--allow-net":
            let text = try parser.value(for: option)
            do { _ = try NetworkRange(parsing: text) } catch { throw UsageError("--allow-net: \(error)") }
            config.allowNet = (config.allowNet ?? []) + [text]
        case "--ephemeral":
            config.ephemeral = true
        case "--disk":
            config.diskMiB = try parser.integer(for: option, in: 1...(1 << 24))
        case "--handshake-timeout":
            config.handshakeTimeoutMs = try parser.duration(for: option)
        case "--hostname":
            config.hostname = try parser.value(for: option)
        case "--log-stdin":
            config.logStdin = true
        case "--seccomp":
            let text = try parser.value(for: option)
            guard SandboxConfig.seccompProfiles.contains(text) else {
                throw UsageError("--seccomp must be default, restricted or none, not '\(text)'")
            }
            if text == "none" {
                FileHandle.standardError.write(Data("tether: warning: --seccomp none: the sandbox's commands run without a seccomp filter unless they ask for one (capabilities stay bounded, no_new_privs stays set)\n".utf8))
            }
            config.seccomp = text
        default:
            return false
        }
        return true
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
        print(lines.joined(separator: "\n"))
        for warning in state.warnings { printWarning(warning) }
    }

    // MARK: rm

    static func remove(_ arguments: [String]) -> Int32 {
        var parser = SandboxArguments(arguments)
        var force = false
        var graceMs: UInt64 = 10_000
        do {
            while let option = try parser.nextOption() {
                switch option {
                case "--force", "-f": force = true
                case "--grace": graceMs = try parser.duration(for: option)
                case "-h", "--help":
                    print(rmUsage)
                    return 0
                default: throw UsageError("unknown option \(option)")
                }
            }
            guard parser.remaining.count == 1 else { throw UsageError("tether rm takes one sandbox name") }
        } catch {
            return usageError(error, usage: rmUsage)
        }
        do {
            try sandboxes().remove(parser.remaining[0], stopFirst: force, graceMs: graceMs)
            print("sandbox \(parser.remaining[0]) removed")
            return 0
        } catch {
            return report(error)
        }
    }

    // MARK: ls

    static func list(_ arguments: [String]) -> Int32 {
        if arguments.contains("-h") || arguments.contains("--help") {
            print(lsUsage)
            return 0
        }
        guard arguments.isEmpty else { return usageError(UsageError("tether ls takes no arguments"), usage: lsUsage) }
        let sandboxes = sandboxes()
        do { try sandboxes.home.check() } catch {
            // No $TETHER_HOME yet: no sandboxes. Anything else about it is worth refusing.
            guard case .unsafeState(let unsafe) = error, case .failed(_, let cause) = unsafe.problem, cause == .noEntry else {
                return report(error)
            }
        }
        let entries = sandboxes.list()
        var rows = [["NAME", "STATUS", "BACKEND", "PID", "AGE", "ROOTFS"]]
        let now = Date().timeIntervalSince1970
        for entry in entries {
            if let problem = entry.problem {
                // Its directory is not ours or is open to others: nothing in it was read.
                rows.append([entry.name, "unsafe", "-", "-", "-", "-"])
                printWarning("\(entry.name): \(problem.message)" + (problem.hint.map { "\n-> " + $0 } ?? ""))
                continue
            }
            let state = entry.state
            // The lock is the truth about liveness; state.json may be from a supervisor that died.
            let status = entry.isLive ? (state?.status.rawValue ?? "booting") : (state.map { $0.status == .running || $0.status == .stopping || $0.status == .booting ? "dead" : $0.status.rawValue } ?? "unknown")
            let age = state.map { formatAge(now - $0.startedAt) } ?? "-"
            rows.append([entry.name, status, state?.backend.rawValue ?? "-",
                         entry.isLive ? (state?.sandboxPid.map(String.init) ?? "-") : "-", age, state?.rootfs ?? "-"])
        }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            print(row.enumerated().map { $0.offset == row.count - 1 ? $0.element : $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
                .joined(separator: "  "))
        }
        return 0
    }

    static func formatAge(_ seconds: Double) -> String {
        let s = Int(max(0, seconds))
        if s < 120 { return "\(s)s" }
        if s < 7200 { return "\(s / 60)m" }
        if s < 172_800 { return "\(s / 3600)h" }
        return "\(s / 86400)d"
    }

    // MARK: stop

    static func stop(_ arguments: [String]) -> Int32 {
        var parser = SandboxArguments(arguments)
        var graceMs: UInt64 = 10_000
        do {
            while let option = try parser.nextOption() {
                switch option {
                case "--grace": graceMs = try parser.duration(for: option)
                case "-h", "--help":
                    print(stopUsage)
                    return 0
                default: throw UsageError("unknown option \(option)")
                }
            }
            guard parser.remaining.count == 1 else { throw UsageError("tether stop takes one sandbox name") }
        } catch {
            return usageError(error, usage: stopUsage)
        }
        let name = parser.remaining[0]
        do {
            switch try sandboxes().stop(name, graceMs: graceMs) {
            case .stopped(let exit):
                print("sandbox \(name) stopped" + (exit.map { ": \($0)" } ?? ""))
            case .killed:
                print("sandbox \(name) killed: it did not stop within the \(graceMs) ms grace")
            }
            return 0
        } catch {
            return report(error)
        }
    }

    // MARK: output

    static func absolute(_ path: String) -> String {
        URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath)).standardizedFileURL.path
    }

    /// An error block: what went wrong, then what to do (`-> ...`). Exit status 1.
    static func report(_ error: SandboxError) -> Int32 {
        var text = "error: \(error.message)\n"
        if case .failed(let failure) = error {
            text = "error: the sandbox did not boot (stage \(failure.stage)"
                + (failure.errno == 0 ? "" : ", \(Errno(rawValue: failure.errno))") + ")\n  \(failure.message)\n"
        }
        if let hint = error.hint { text += "-> \(hint)\n" }
        FileHandle.standardError.write(Data(text.utf8))
        return CLIExit.failure
    }

    static func printWarning(_ text: String) {
        FileHandle.standardError.write(Data("warning: \(text)\n".utf8))
    }

    static func usageError(_ error: any Error, usage: String) -> Int32 {
        FileHandle.standardError.write(Data("error: \(error)\n\(usage)\n".utf8))
        return CLIExit.usage
    }
}

// The sandbox commands in `tether`'s command table (Command.swift).

enum RunCommand: Command {
    static let name = "run"
    static let summary = "boot a sandbox, run a command in it, stop it"
    static var help: String { SandboxCommands.runUsage + "\n" }
    static func run(_ arguments: ArraySlice<String>) -> Int32 { SandboxCommands.run(Array(arguments)) }
}

enum BootCommand: Command {
    static let name = "boot"
    static let summary = "boot a sandbox and leave it running"
    static var help: String { SandboxCommands.bootUsage + "\n" }
    static func run(_ arguments: ArraySlice<String>) -> Int32 { SandboxCommands.boot(Array(arguments)) }
}

enum ListCommand: Command {
    static let name = "ls"
    static let summary = "list sandboxes"
    static var help: String { SandboxCommands.lsUsage + "\n" }
    static func run(_ arguments: ArraySlice<String>) -> Int32 { SandboxCommands.list(Array(arguments)) }
}

enum RemoveCommand: Command {
    static let name = "rm"
    static let summary = "remove a stopped sandbox: its state, logs and writable layer"
    static var help: String { SandboxCommands.rmUsage + "\n" }
    static func run(_ arguments: ArraySlice<String>) -> Int32 { SandboxCommands.remove(Array(arguments)) }
}

enum StopCommand: Command {
    static let name = "stop"
    static let summary = "stop a sandbox (its init powers off), killing it after a grace"
    static var help: String { SandboxCommands.stopUsage + "\n" }
    static func run(_ arguments: ArraySlice<String>) -> Int32 { SandboxCommands.stop(Array(arguments)) }
}
