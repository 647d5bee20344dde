import Foundation
import TetherClient
import TetherProtocol

/// `tether shell [OPTIONS]`
enum ShellCommand: Command {
    static let name = "shell"
    static let summary = "an interactive login shell in the sandbox"
    static let help = """
        usage: tether shell [OPTIONS]

        Starts the user's login shell in the sandbox (the shell /etc/passwd gives the user
        there, else /bin/sh) on a pseudo-terminal the size of this window, with this terminal
        in raw mode until the shell ends. The terminal's settings are restored however tether
        ends: the shell exits, an error, the detach keys, or SIGINT/SIGTERM/SIGHUP to tether.
        When stdin is not a terminal (or with --no-tty), the shell reads commands from stdin
        without a pseudo-terminal.

        Options:
          -e, --env K=V         set an environment variable (repeatable; -e K copies it from here)
          -w, --workdir DIR     working directory in the sandbox
          -u, --user USER       the user whose shell it is (name, uid, or user:group)
              --detach-key KEYS the keys that detach and leave the shell running (default
                                ctrl-]; several like ctrl-p,ctrl-q; none to turn it off);
                                `tether attach SESSION` comes back
              --no-tty          no pseudo-terminal even if stdin and stdout are terminals
          -t, --tty             a pseudo-terminal even if they are not
        \(seccompHelpLines)
        \(RelayTarget.helpLines)
        \(TetherCLI.commonHelpLines)

        Exit status: the shell's own (128+N when signal N killed it); 0 after detaching; 125
        when tether itself failed (relay or agent unreachable, agent gone); 2 for a usage error.

        """

    static let options: [OptionSpec] = [
        OptionSpec("-e", "--env", value: true), OptionSpec("-w", "--workdir", value: true),
        OptionSpec("-u", "--user", value: true), OptionSpec("--detach-key", value: true),
        OptionSpec("--no-tty"), OptionSpec("-t", "--tty"), OptionSpec("--seccomp", value: true),
    ] + RelayTarget.options

    /// Finds the login shell inside the sandbox, where /etc/passwd is, and becomes it: field
    /// 7 of the user's entry if it is executable, else /bin/sh. `-l` makes it a login shell
    /// (bash, dash, busybox ash, zsh and mksh all take it).
    static let launcher = """
        s=$(awk -F: -v u="$(id -u)" '$3 == u { print $7; exit }' /etc/passwd 2>/dev/null)
        [ -n "$s" ] && [ -x "$s" ] || s=/bin/sh
        export SHELL="$s"
        [ -t 0 ] && exec "$s" -l
        exec "$s"
        """

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name, .program) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            guard parsed.positionals.isEmpty else {
                throw UsageError(message: "unexpected \(parsed.positionals[0]) (to run a command: tether exec)", command: name)
            }
            var exec = ExecOptions()
            exec.env = try ExecCommand.environment(parsed.all("env"))
            exec.cwd = parsed.value("workdir")
            exec.user = parsed.value("user")
            if let text = parsed.value("seccomp") {
                exec.seccomp = try parseSeccompProfile(text, command: name, scope: "the shell runs")
            }
            let keys = try DetachKeys(parsing: parsed.value("detach-key") ?? DetachKeys.defaultSpelling, command: name)
            if try ExecCommand.wantsTerminal(parsed, command: name) {
                exec.tty = LocalTerminal.currentSize
                if exec.env["TERM"] == nil { exec.env["TERM"] = ExecCommand.localTerm }
            } else {
                exec.stdin = true
            }
            let clientOptions = try RelayTarget.clientOptions(parsed, command: name)
            return ExecCommand.execute(["/bin/sh", "-c", launcher], exec, clientOptions: clientOptions, detachKeys: keys)
        }
    }
}
