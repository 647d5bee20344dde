#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherClient
import TetherProtocol

/// `tether kill SESSION [--signal N|NAME]`
enum KillCommand: Command {
    static let name = "kill"
    static let summary = "send a signal to a session"
    static let help = """
        usage: tether kill [OPTIONS] SESSION

        Sends a signal to the process group of a session (as tether ps numbers them), from any
        client, attached or not.

        Options:
          -s, --signal SIG      the signal: a number or a name (TERM, KILL, INT, HUP, ...);
                                default TERM, like kill(1)
        \(RelayTarget.helpLines)
        \(TetherCLI.commonHelpLines)

        """

    static let options: [OptionSpec] = [OptionSpec("-s", "--signal", value: true)] + RelayTarget.options

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            guard parsed.positionals.count == 1 else { throw UsageError(message: "give exactly one SESSION", command: name) }
            let session = try parseSession(parsed.positionals[0], command: name)
            let signal = try parsed.value("signal").map { try parseSignal($0, command: name) } ?? SIGTERM
            let clientOptions = try RelayTarget.clientOptions(parsed, command: name)
            return withClient(clientOptions) { client async throws(TetherError) -> Int32 in
                try await client.signal(session: session, signal)
                return 0
            }
        }
    }
}
