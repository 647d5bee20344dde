import TetherClient
import TetherProtocol

/// `tether attach SESSION`
enum AttachCommand: Command {
    static let name = "attach"
    static let summary = "pick up a detached session's output and exit status"
    static let help = """
        usage: tether attach [OPTIONS] SESSION

        Attaches to a detached session (tether ps shows them): what it wrote while nobody
        watched comes first (up to the relay's replay buffer; if older output was lost, a line
        on stderr says how many bytes), then its live output, then its exit status.

        A session on a pseudo-terminal (tether shell, exec -t) is interactive again: this
        terminal goes in raw mode (restored however tether ends), keystrokes go to it, its
        size follows this window, and the detach keys leave it running again.

        Options:
              --no-replay       skip the buffered output, start with what comes next
              --detach-key KEYS the keys that detach from a terminal session (default
                                ctrl-]; several like ctrl-p,ctrl-q; none)
        \(RelayTarget.helpLines)
        \(TetherCLI.commonHelpLines)

        Exit status as for tether exec: the command's own, 128+N for signal N, 125 when
        tether failed (no such session, relay unreachable).

        """

    static let options: [OptionSpec] = [OptionSpec("--no-replay"), OptionSpec("--detach-key", value: true)] + RelayTarget.options

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name, .program) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            guard parsed.positionals.count == 1 else { throw UsageError(message: "give exactly one SESSION", command: name) }
            let session = try parseSession(parsed.positionals[0], command: name)
            let clientOptions = try RelayTarget.clientOptions(parsed, command: name)
            let replay = !parsed.has("no-replay")
            let keys = try DetachKeys(parsing: parsed.value("detach-key") ?? DetachKeys.defaultSpelling, command: name)
            return withClient(clientOptions, .program) { client async throws(TetherError) -> Int32 in
                let handle = try await client.attach(session: session, replay: replay)
                if handle.droppedBytes > 0 {
                    ErrorBlock.warning("\(handle.droppedBytes) bytes of session \(session)'s output were lost before the replay (the relay's replay buffer was full)")
                }
                if handle.isTerminal { return try await InteractiveSession.run(handle, detachKeys: keys, endInputOnEOF: false) }
                guard let status = try await streamSession(handle) else { return CLIExit.tetherFailed }
                return CLIExit.status(status)
            }
        }
    }
}
