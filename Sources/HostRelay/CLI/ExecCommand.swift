#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherClient
import TetherPosix
import TetherProtocol

/// `tether exec [OPTIONS] -- CMD ARGS...`
enum ExecCommand: Command {
    static let name = "exec"
    static let summary = "run a command in the sandbox"
    static let help = """
        usage: tether exec [OPTIONS] [--] CMD [ARGS...]

        Runs CMD in the sandbox and streams its stdout and stderr as they arrive. Options go
        before CMD; everything from CMD on is the command's own.

        Options:
          -e, --env K=V         set an environment variable (repeatable; -e K copies it from here)
          -w, --workdir DIR     working directory in the sandbox
          -u, --user USER       run as USER (name, uid, or user:group)
              --timeout D       SIGTERM the command after D (500ms, 10s, 2m), SIGKILL 2s later
              --kill-grace D    the time between that SIGTERM and the SIGKILL (default 2s)
              --rlimit N=S[:H]  a resource limit (repeatable): N is nofile, nproc, as, core, cpu,
                                fsize, stack, data, memlock, rss, nice, rtprio, msgqueue,
                                sigpending or locks; S and H counts or 'unlimited'; S alone sets both
          -i, --interactive     pipe this terminal's stdin to the command (EOF closes it)
          -t, --tty             run the command on a pseudo-terminal: this terminal goes in
                                raw mode (restored when tether ends, however it ends), its
                                size follows the window, keystrokes (ctrl-C too) go to the
                                command; the default when stdin and stdout are terminals
              --no-tty          never a pseudo-terminal (the default otherwise)
              --detach-key KEYS with a terminal: the keys that detach and leave the command
                                running (default ctrl-]; like ctrl-p,ctrl-q; none)
              --detach          start it, print its session number (alone on stdout; output
                                that came before the detach goes to stderr), leave it running
                                (`tether attach N` picks it up; output until then is printed)
        \(seccompHelpLines)
        \(RelayTarget.helpLines)
        \(TetherCLI.commonHelpLines)

        SIGINT, SIGTERM and SIGHUP sent to tether go to the command's process group; with a
        terminal in raw mode they end tether (and the command with it).

        Exit status: the command's own; 128+N when a signal N killed it; 127 when the
        program was not found, 126 when it is not executable or permission was denied,
        1 when it failed to start otherwise; 125 when tether itself failed (relay or agent
        unreachable, agent gone); 2 for a usage error.

        """

    static let stopsAtFirstPositional = true
    static let options: [OptionSpec] = [
        OptionSpec("-e", "--env", value: true), OptionSpec("-w", "--workdir", value: true),
        OptionSpec("-u", "--user", value: true), OptionSpec("--timeout", value: true),
        OptionSpec("-i", "--interactive"), OptionSpec("--detach"), OptionSpec("-t", "--tty"), OptionSpec("--no-tty"),
        OptionSpec("--detach-key", value: true), OptionSpec("--seccomp", value: true),
        OptionSpec("--rlimit", value: true), OptionSpec("--kill-grace", value: true),
    ] + RelayTarget.options

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name, .program) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else {
                return 0
            }
            guard !parsed.positionals.isEmpty else { throw UsageError(message: "no command to run", command: name) }
            var exec = ExecOptions()
            exec.env = try environment(parsed.all("env"))
            exec.cwd = parsed.value("workdir")
            exec.user = parsed.value("user")
            if let timeout = parsed.value("timeout") { exec.timeout = try parseDuration(timeout, option: "--timeout", command: name) }
            if let grace = parsed.value("kill-grace") { exec.killGrace = try parseDuration(grace, option: "--kill-grace", command: name) }
            for text in parsed.all("rlimit") {
                let (resource, limit) = try parseResourceLimit(text, command: name)
                exec.rlimits[resource] = limit
            }
            exec.stdin = parsed.has("interactive")
            exec.detach = parsed.has("detach")
            if let text = parsed.value("seccomp") {
                exec.seccomp = try parseSeccompProfile(text, command: name, scope: "the command runs")
            }
            if exec.stdin && exec.detach { throw UsageError(message: "--interactive and --detach do not go together", command: name) }
            let keys = try DetachKeys(parsing: parsed.value("detach-key") ?? DetachKeys.defaultSpelling, command: name)
            if try wantsTerminal(parsed, command: name, automatic: !exec.detach) {
                exec.tty = LocalTerminal.currentSize
                if exec.env["TERM"] == nil { exec.env["TERM"] = localTerm }
            }
            let clientOptions = try RelayTarget.clientOptions(parsed, command: name)
            let argv = parsed.positionals
            let request = exec
            return execute(argv, request, clientOptions: clientOptions, detachKeys: keys)
        }
    }

    /// The resource names the agent knows (setrlimit(2)'s, without RLIMIT_).
    static let resourceNames = ["as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
                                "nproc", "rss", "rtprio", "sigpending", "stack"]

    /// `NAME=SOFT[:HARD]`, each value a count or `unlimited`; a lone SOFT sets both.
    static func parseResourceLimit(_ text: String, command: String) throws -> (String, ResourceLimit) {
        let usage = "--rlimit '\(text)': expected NAME=SOFT[:HARD] (for example nofile=1024:4096; a value may be 'unlimited')"
        guard let equals = text.firstIndex(of: "=") else { throw UsageError(message: usage, command: command) }
        let resource = text[..<equals].lowercased()
        guard resourceNames.contains(resource) else {
            throw UsageError(message: "--rlimit: '\(resource)' is not a resource (one of \(resourceNames.joined(separator: ", ")))", command: command)
        }
        let values = text[text.index(after: equals)...].split(separator: ":", omittingEmptySubsequences: false)
        guard values.count == 1 || values.count == 2 else { throw UsageError(message: usage, command: command) }
        func value(_ part: Substring) throws -> UInt64? {
            if part == "unlimited" || part == "infinity" { return nil }
            guard let number = UInt64(part) else { throw UsageError(message: usage, command: command) }
            return number
        }
        let soft = try value(values[0])
        let hard = values.count == 2 ? try value(values[1]) : soft
        if let soft, let hard, soft > hard {
            throw UsageError(message: "--rlimit \(resource): the soft limit \(soft) is above the hard limit \(hard)", command: command)
        }
        return (resource, ResourceLimit(soft: soft, hard: hard))
    }

    static func environment(_ assignments: [String]) throws -> [String: String] {
        var env: [String: String] = [:]
        for assignment in assignments {
            if let equals = assignment.firstIndex(of: "=") {
                let key = String(assignment[..<equals])
                guard !key.isEmpty else { throw UsageError(message: "-e '\(assignment)': the name is empty", command: name) }
                env[key] = String(assignment[assignment.index(after: equals)...])
            } else if let value = ProcessInfo.processInfo.environment[assignment] {
                env[assignment] = value
            }
        }
        return env
    }

    /// `-t` asks for a pseudo-terminal, `--no-tty` refuses one; neither: one when stdin and
    /// stdout are both terminals (someone is typing and watching), as ssh decides for a shell.
    static func wantsTerminal(_ parsed: ParsedArguments, command: String, automatic: Bool = true) throws -> Bool {
        if parsed.has("tty") && parsed.has("no-tty") {
            throw UsageError(message: "--tty and --no-tty contradict each other; give one", command: command)
        }
        if parsed.has("tty") { return true }
        if parsed.has("no-tty") { return false }
        return automatic && LocalTerminal.isTerminal(0) && LocalTerminal.isTerminal(1)
    }

    /// The remote terminal's type: the local one's, so programs draw for what displays them.
    static var localTerm: String {
        let term = ProcessInfo.processInfo.environment["TERM"] ?? ""
        return term.isEmpty ? "xterm-256color" : term
    }

    static func execute(_ argv: [String], _ exec: ExecOptions, clientOptions: ClientOptions, detachKeys: DetachKeys) -> Int32 {
        withClient(clientOptions, .program) { client async throws(TetherError) -> Int32 in
            let handle = try await client.execStream(argv, exec)
            if exec.tty != nil && !exec.detach {
                return try await InteractiveSession.run(handle, detachKeys: detachKeys)
            }
            if exec.detach {
                let number = try await handle.detach()
                // What arrived before the relay took the detach is printed, not replayed, on
                // stderr: stdout holds only the number, so `N=$(tether exec --detach ...)` works.
                _ = try await OutputPump().copyOutput(of: handle, stdoutTo: 2)
                writeStandardOutput("\(number)\n")
                return 0
            }
            if exec.stdin, let writer = handle.takeStdin() {
                do throws(Errno) { _ = try StdinForwarder(writer) } catch {
                    throw TetherError(.internal, "cannot forward stdin: \(error)", operation: "exec", errno: error.rawValue)
                }
            }
            guard let status = try await streamSession(handle) else {
                ErrorBlock.report(TetherError(.protocolError, "the session ended without an exit status", operation: "exec"), operation: "exec")
                return CLIExit.tetherFailed
            }
            return CLIExit.status(status, timeout: exec.timeout.map { Duration.describe(milliseconds: $0.milliseconds) })
        }
    }
}
