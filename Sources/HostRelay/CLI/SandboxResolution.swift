import TetherSandbox
import TetherProtocol

/// `--sandbox NAME` -> the socket of the relay that sandbox's supervisor started
/// (`$TETHER_HOME/sandboxes/NAME/relay.sock`, from its state.json).
enum SandboxResolution {
    static func socket(ofSandbox name: String) throws -> Address {
        guard SandboxName.isValid(name) else {
            throw CLIError(message: "--sandbox: '\(name)' is not a sandbox name", hint: "see `tether ls`", exitStatus: CLIExit.usage,
                           code: "invalidName")
        }
        let entry = SandboxCommands.sandboxes().entry(name)
        if let problem = entry.problem {
            throw CLIError(message: "sandbox \(name): \(problem.message)", hint: problem.hint ?? "see `tether ls`", exitStatus: CLIExit.tetherFailed,
                           code: problem.code)
        }
        guard entry.isLive, let state = entry.state, state.status == .running else {
            throw CLIError(message: "sandbox \(name) is not running",
                           hint: "see `tether ls`; start it with `tether boot --name \(name)`", exitStatus: CLIExit.tetherFailed,
                           code: "notRunning")
        }
        guard state.relayPid != nil else {
            throw CLIError(message: "sandbox \(name) has no relay (it was booted without one, or its relay ended)",
                           hint: "see \(entry.paths.supervisorLog.path); its agent listens on unix:\(state.agentSocket)", exitStatus: CLIExit.tetherFailed,
                           code: "noRelay")
        }
        // The socket in the checked directory, not whatever path state.json says.
        return .unix(path: entry.paths.relaySocket.path)
    }
}
