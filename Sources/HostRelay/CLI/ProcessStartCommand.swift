#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherClient
import TetherPosix
import TetherProtocol

/// `tether start --name NAME [READINESS] [EXEC OPTIONS] -- CMD ARGS...`
enum StartCommand: Command {
    static let name = "start"
    static let summary = "start a named background process, return when it is ready"
    static let help = """
        usage: tether start [OPTIONS] --name NAME [--] CMD [ARGS...]

        Starts CMD in the sandbox as a named background process and returns once it is ready:
        at once without a condition, else when every condition given has held. Prints NAME.
        The process outlives this command, the client and a relay restart; its output goes to
        a log read with `tether proc logs NAME` (stdout and stderr in the order they came).

        Readiness (checked by the agent itself; no tool is needed in the image):
              --wait-port PORT  a TCP socket listens on PORT (127.0.0.1, ::1 or any address)
              --wait-http [HOST]:PORT[/PATH]
                                GET /PATH over HTTP/1.0 answers 200-399 (HOST: an IP address
                                or localhost; default 127.0.0.1)
              --wait-log REGEX  a line of output (stdout or stderr) matches REGEX (POSIX
                                extended syntax, as grep -E)
              --wait-file PATH  PATH exists
              --wait-exec CMD   `/bin/sh -c CMD` exits 0 (run again until it does)
              --wait-timeout D  give up waiting after D (default 60s); the process goes on
        Each may be repeated; all must hold.

        Process options:
              --name NAME       the process's name (letters, digits, '.', '_', '-'); required
              --restart on-failure[:N]
                                restart it when it exits non-zero or a signal it was not sent
                                through tether ends it, at most N times (default: no limit),
                                waiting 100ms, 200ms, ... up to 5s between tries
              --log-size BYTES  the log's size (default 4M; 4k ... 64M); older output is dropped
                                and counted

        Exec options:
          -e, --env K=V         set an environment variable (repeatable; -e K copies it from here)
          -w, --workdir DIR     working directory in the sandbox
          -u, --user USER       run as USER (name, uid, or user:group)
              --timeout D       SIGTERM the process after D, SIGKILL after --kill-grace
              --kill-grace D    the time between that SIGTERM and the SIGKILL (default 2s)
              --rlimit N=S[:H]  a resource limit (repeatable; see tether exec --help)
        \(seccompHelpLines)
        \(RelayTarget.helpLines)
        \(TetherCLI.commonHelpLines)

        Exit status: 0 when it is ready; 124 when the conditions did not hold within
        --wait-timeout (the process goes on); 127 when the program was not found, 126 when it
        is not executable; 1 when it exited before it was ready, the name is in use, or tether
        failed otherwise; 2 for a usage error.

        """

    static let options: [OptionSpec] = [
        OptionSpec("--name", value: true), OptionSpec("--wait-port", value: true), OptionSpec("--wait-http", value: true),
        OptionSpec("--wait-log", value: true), OptionSpec("--wait-file", value: true), OptionSpec("--wait-exec", value: true),
        OptionSpec("--wait-timeout", value: true), OptionSpec("--restart", value: true), OptionSpec("--log-size", value: true),
        OptionSpec("-e", "--env", value: true), OptionSpec("-w", "--workdir", value: true), OptionSpec("-u", "--user", value: true),
        OptionSpec("--timeout", value: true), OptionSpec("--kill-grace", value: true), OptionSpec("--rlimit", value: true),
        OptionSpec("--seccomp", value: true),
    ] + RelayTarget.options

    /// Exit status when the conditions did not hold in time (as `exec --timeout`).
    static let notReadyInTime = CLIExit.timedOut

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name, .program) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options, stopAtFirstPositional: true) else {
                return 0
            }
            guard let processName = parsed.value("name") else { throw UsageError(message: "--name NAME is required", command: name) }
            if let problem = ProcessName.problem(processName) { throw UsageError(message: "--name: \(problem)", command: name) }
            guard !parsed.positionals.isEmpty else { throw UsageError(message: "no command to run", command: name) }
            var exec = ExecOptions()
            exec.env = try ExecCommand.environment(parsed.all("env"))
            exec.cwd = parsed.value("workdir")
            exec.user = parsed.value("user")
            if let timeout = parsed.value("timeout") { exec.timeout = try parseDuration(timeout, option: "--timeout", command: name) }
            if let grace = parsed.value("kill-grace") { exec.killGrace = try parseDuration(grace, option: "--kill-grace", command: name) }
            for text in parsed.all("rlimit") {
                let (resource, limit) = try ExecCommand.parseResourceLimit(text, command: name)
                exec.rlimits[resource] = limit
            }
            if let text = parsed.value("seccomp") { exec.seccomp = try parseSeccompProfile(text, command: name, scope: "the process runs") }
            exec.detach = true
            var process = ProcessOptions(ready: try readiness(parsed))
            if let text = parsed.value("wait-timeout") { process.waitTimeout = try parseDuration(text, option: "--wait-timeout", command: name) }
            if let text = parsed.value("log-size") {
                let bytes = UInt64(try parseByteCount(text, option: "--log-size", command: name))
                guard bytes >= ProcessStart.minLogBytes && bytes <= ProcessStart.maxLogBytes else {
                    throw UsageError(message: "--log-size: \(text) is outside 4k ... 64M", command: name)
                }
                process.logBytes = bytes
            }
            if let text = parsed.value("restart") { process.maxRestarts = try restartLimit(text) }
            let clientOptions = try RelayTarget.clientOptions(parsed, command: name)
            let argv = parsed.positionals
            let options = process
            let execOptions = exec
            return runAsync {
                do throws(TetherError) {
                    let client = try await TetherClient.connect(clientOptions)
                    defer { client.close() }
                    let handle = try await client.processes.start(processName, argv, execOptions, options)
                    try await handle.waitUntilReady()
                    writeStandardOutput(processName + "\n")
                    return CLIExit.success
                } catch {
                    printNotReady(error)
                    if error.code == .remote(.processReadyTimeout) { return notReadyInTime }
                    if error.spawn != nil { return CLIExit.status(for: error, .program) }
                    return CLIExit.failure
                }
            }
        }
    }

    static func readiness(_ parsed: ParsedArguments) throws -> Readiness {
        var ready = Readiness()
        for text in parsed.all("wait-port") {
            guard let port = UInt16(text), port > 0 else { throw UsageError(message: "--wait-port: '\(text)' is not a port (1-65535)", command: name) }
            ready.ports.append(port)
        }
        for text in parsed.all("wait-http") { ready.http.append(try httpProbe(text)) }
        ready.logs = parsed.all("wait-log")
        if ready.logs.contains(where: \.isEmpty) { throw UsageError(message: "--wait-log: the expression is empty", command: name) }
        ready.files = parsed.all("wait-file")
        ready.execs = parsed.all("wait-exec").map { ["/bin/sh", "-c", $0] }
        return ready
    }

    /// `[HOST]:PORT[/PATH]`: `:8080/health`, `127.0.0.1:80`, `[::1]:8080/`.
    static func httpProbe(_ text: String) throws -> HTTPProbe {
        let usage = UsageError(message: "--wait-http: '\(text)' is not [HOST]:PORT[/PATH] (like :8080/health or [::1]:80/)", command: name)
        var rest = Substring(text)
        var host = "127.0.0.1"
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw usage }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...]
        } else if let colon = rest.firstIndex(of: ":") {
            if colon != rest.startIndex { host = String(rest[..<colon]) }
            rest = rest[colon...]
        }
        guard rest.hasPrefix(":") else { throw usage }
        rest = rest.dropFirst()
        let portText = rest.prefix { $0.isNumber }
        guard let port = UInt16(portText), port > 0 else { throw usage }
        let path = rest.dropFirst(portText.count)
        guard path.isEmpty || path.hasPrefix("/") else { throw usage }
        return HTTPProbe(host: host, port: port, path: path.isEmpty ? "/" : String(path))
    }

    /// `on-failure` or `on-failure:N`.
    static func restartLimit(_ text: String) throws -> UInt32 {
        if text == "on-failure" { return UInt32.max }
        guard text.hasPrefix("on-failure:"), let count = UInt32(text.dropFirst("on-failure:".count)) else {
            throw UsageError(message: "--restart: '\(text)' is not on-failure[:N]", command: name)
        }
        return count
    }

    /// The error block, with the process's last output below it rather than on one line.
    static func printNotReady(_ error: TetherError) {
        // As JSON the tail stays in `context` (one object); as text it goes below the block.
        if ErrorBlock.json { return ErrorBlock.print(error) }
        var shown = error
        let tail = shown.context.removeValue(forKey: "outputTail")
        ErrorBlock.print(shown)
        guard let tail, !tail.isEmpty, !ErrorBlock.json else { return }
        var text = "  its last output:\n"
        for line in tail.split(separator: "\n", omittingEmptySubsequences: false).dropLast(tail.hasSuffix("\n") ? 1 : 0) {
            text += "  | " + escapeControls(line) + "\n"
        }
        writeStandardError(text)
    }

    /// Output from the guest shown in an error: control characters (ESC, CR) escaped, so the
    /// terminal shows them instead of acting on them.
    private static func escapeControls(_ line: Substring) -> String {
        var out = ""
        for scalar in line.unicodeScalars {
            if scalar == "\t" || (scalar.value >= 0x20 && scalar.value != 0x7F && !(0x80...0x9F).contains(scalar.value)) {
                out.unicodeScalars.append(scalar)
            } else {
                out += "\\x" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
            }
        }
        return out
    }
}
