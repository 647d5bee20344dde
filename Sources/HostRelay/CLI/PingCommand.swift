#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherClient
import TetherProtocol

/// `tether ping`
enum PingCommand: Command {
    static let name = "ping"
    static let summary = "measure the round trip to the sandbox's agent"
    static let help = """
        usage: tether ping [OPTIONS]

        Sends ping frames through the relay to the agent and prints each round trip.

        Options:
          -c, --count N         how many pings (default 1)
              --interval D      pause between pings (default 1s)
        \(RelayTarget.helpLines)
        \(TetherCLI.commonHelpLines)

        """

    static let options: [OptionSpec] = [OptionSpec("-c", "--count", value: true), OptionSpec("--interval", value: true)]
        + RelayTarget.options

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            let count = try parsed.value("count").map { text in
                guard let n = Int(text), n > 0 else { throw UsageError(message: "--count: '\(text)' is not a positive number", command: name) }
                return n
            } ?? 1
            let interval = try parsed.value("interval").map { try parseDuration($0, option: "--interval", command: name) } ?? .seconds(1)
            let clientOptions = try RelayTarget.clientOptions(parsed, command: name)
            return withClient(clientOptions) { client async throws(TetherError) -> Int32 in
                let hello = client.serverHello
                let peer = hello.map { "\($0.role.rawValue == "relay" ? "agent" : $0.role.rawValue) \($0.agentVersion ?? "?")" } ?? "agent"
                for i in 0..<count {
                    if i > 0 { try? await Task.sleep(for: interval) }
                    let rtt = try await client.ping()
                    let (seconds, attoseconds) = rtt.components
                    let ms = Double(seconds) * 1000 + Double(attoseconds) / 1e15
                    writeStandardOutput("pong from \(peer) via \(clientOptions.socket): time=\(String(format: "%.3f", ms)) ms\n")
                }
                return 0
            }
        }
    }
}
