#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherSandbox
import TetherPosix

/// `tether run`: boot a sandbox, run one command in it as `tether exec` would, stop it.
enum RunCommand: Command {
    static let name = "run"
    static let summary = "boot a sandbox, run a command in it, stop it"
    static let help = """
        usage: tether run [--rootfs DIR] [--name NAME] [BOOT OPTIONS] [--] CMD [ARGS...]
        Boots a sandbox, runs CMD in it (as `tether exec` would: its output streams here and its
        exit status is tether's), then stops the sandbox. Without --rootfs it uses the default
        guest tree (busybox and the agent; rootfs/build.sh assembles it on first use and
        $TETHER_HOME/default-rootfs remembers where; delete that file to assemble it anew).
        Without --name the sandbox is called run-XXXXXX and its state is removed afterwards;
        a named one stays in `tether ls` as stopped. BOOT OPTIONS are `tether boot`'s:
          --rootfs DIR, --name NAME, --backend B, --cpus N, --memory M, --pids N, --init PATH|auto,
          --network none|egress|host, --allow-net CIDR, --ephemeral, --disk MiB, --replace, --replace-grace D,
          --handshake-timeout D, --hostname NAME, --log-stdin, --seccomp P (the profile CMD runs
          under); see `tether boot --help`
        \(TetherCLI.commonHelpLines)

        """
    static let options = SandboxCommands.bootOptions
    static let stopsAtFirstPositional = true

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name, .program) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else {
                return 0
            }
            guard !parsed.positionals.isEmpty else { throw UsageError(message: "no command to run", command: name) }
            let options = try SandboxCommands.sandboxOptions(parsed, command: name)
            let state = try Sandbox.launch(options)
            let sandboxes = options.sandboxes
            // A sandbox nobody named is nobody's to look at again: its state goes with it.
            let stop = { (grace: Duration) throws(SandboxError) -> Sandboxes.StopOutcome in try Sandbox.stop(state.name, grace: grace, sandboxes: sandboxes, remove: options.name == nil) }
            for warning in state.warnings { ErrorBlock.warning(warning) }
            guard state.relayPid != nil else {
                _ = try? stop(.seconds(2))
                throw CLIError(message: "the sandbox booted but its relay did not start",
                               hint: "see \(sandboxes.home.sandbox(state.name).supervisorLog.path)",
                               exitStatus: CLIExit.tetherFailed, code: "relayFailed")
            }
            let status = ExecCommand.run((["--socket", "unix:" + state.relaySocket, "--"] + parsed.positionals)[...])
            // The command is over: nothing in the sandbox is worth a long grace.
            do throws(SandboxError) { _ = try stop(.seconds(2)) } catch {
                ErrorBlock.warning("stopping sandbox \(state.name): \(error.message)", hint: error.hint)
            }
            return status
        }
    }
}
