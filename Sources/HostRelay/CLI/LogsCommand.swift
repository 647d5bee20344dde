#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherClient
import TetherProtocol

/// `tether logs [--follow] [--session N]`
enum LogsCommand: Command {
    static let name = "logs"
    static let summary = "print the relay's exec.log"
    static let help = """
        usage: tether logs [OPTIONS]

        Prints the relay's exec.log (JSON Lines: time, session, stream, data; markers such as
        exec, started, exited carry `event`), oldest rotated file first.

        Options:
          -f, --follow          keep printing lines as they are written (until interrupted)
              --session N       only the lines of session N
        \(RelayTarget.helpLines)
        \(TetherCLI.commonHelpLines)

        """

    static let options: [OptionSpec] = [OptionSpec("-f", "--follow"), OptionSpec("--session", value: true)] + RelayTarget.options

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            let session = try parsed.value("session").map { try parseSession($0, command: name) }
            let follow = parsed.has("follow")
            let clientOptions = try RelayTarget.clientOptions(parsed, command: name)
            return withClient(clientOptions) { client async throws(TetherError) -> Int32 in
                let handle = try await client.logs(session: session, follow: follow)
                // Interrupting a follow ends it cleanly: the relay stops and says done.
                SignalWatcher.shared.setHandler { _ in handle.kill() }
                defer { SignalWatcher.shared.setHandler(nil) }
                let pump = try OutputPump()
                _ = try await pump.copyOutput(of: handle) { if pump.brokenPipe { handle.kill() } }
                return 0
            }
        }
    }
}
