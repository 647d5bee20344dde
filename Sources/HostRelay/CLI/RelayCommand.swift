import Foundation
import TetherProtocol
import TetherRelay

/// `tether relay --agent ADDR --listen unix:PATH`
enum RelayCommand: Command {
    static let name = "relay"
    static let summary = "serve clients on a unix socket for one sandbox's agent"
    static let help = """
        usage: tether relay --agent ADDR --listen unix:PATH [OPTIONS]

        Connects to a sandbox's agent and serves any number of clients (tether, the Swift
        library, other languages) on a unix socket with the same frames. Runs in the
        foreground until SIGTERM or SIGINT. It starts listening once the agent answered.

        If the agent connection drops, every open session ends with an agentGone error and the
        relay reconnects for up to --agent-timeout; then it adopts the agent's detached
        sessions again. If the agent does not come back in time the relay exits (status 1).

        Options:
              --agent ADDR          the agent: unix:PATH, vsock:CID:PORT, hvsock:PATH:PORT, fd:N
              --listen unix:PATH    where clients connect
              --agent-timeout D     how long to keep trying to reach the agent (default 30s)
              --ping-interval D     how often to ping the agent (default 5s)
              --unresponsive-after D
                                    silence after which clients get agentUnresponsive (default 15s)
              --replay-bytes N      output kept per detached session while nobody watches
                                    (default 1M; older output is dropped and counted)
              --log-dir DIR         where exec.log goes (default: the --listen socket's directory)
              --log-max-bytes N     rotate exec.log at this size (default 10M)
              --log-files N         files kept, the live one included (default 3)
              --no-log              write no exec.log
              --log-stdin           also log what clients send to stdin (off: keystrokes
                                    in a terminal session include typed passwords)
              --tunnel ADDR         the agent's tunnel endpoint (unix:PATH, vsock:CID:PORT):
                                    each connection to an exposed port gets one connection there
              --ports-file PATH     keep the exposed ports here, and listen on them again at start
              --name NAME           the relay's name in its hello (default tether-relay)
              --max-clients N       clients connected at once at most (default 4096); the next
                                    one gets a tooManyClients error and is closed. The relay
                                    raises its descriptor soft limit to the hard limit at start;
                                    a hard limit below N plus ~64 turns clients away first (with
                                    the same error), so raise ulimit -Hn for a higher cap
              --no-seccomp          do not confine the relay with its seccomp allow-list
                                    (SECCOMP.md); for debugging only
        \(TetherCLI.commonHelpLines)

        """

    static let options: [OptionSpec] = [
        OptionSpec("--agent", value: true), OptionSpec("--listen", value: true), OptionSpec("--agent-timeout", value: true),
        OptionSpec("--ping-interval", value: true), OptionSpec("--unresponsive-after", value: true),
        OptionSpec("--replay-bytes", value: true), OptionSpec("--log-dir", value: true),
        OptionSpec("--log-max-bytes", value: true), OptionSpec("--log-files", value: true), OptionSpec("--no-log"), OptionSpec("--log-stdin"),
        OptionSpec("--name", value: true), OptionSpec("--max-clients", value: true), OptionSpec("--no-seccomp"),
        OptionSpec("--tunnel", value: true), OptionSpec("--ports-file", value: true),
    ]

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            guard parsed.positionals.isEmpty else { throw UsageError(message: "unexpected \(parsed.positionals[0])", command: name) }
            let configuration = try configuration(parsed)
            let relay: Relay
            relay = try Relay(configuration)
            SignalWatcher.shared.setHandler { _ in relay.stop() }
            try relay.run()
            return 0
        }
    }

    static func configuration(_ parsed: ParsedArguments) throws -> RelayConfiguration {
        guard let agentText = parsed.value("agent") else { throw UsageError(message: "--agent ADDR is required", command: name) }
        guard let listenText = parsed.value("listen") else { throw UsageError(message: "--listen unix:PATH is required", command: name) }
        let agent: Address
        let listen: Address
        do { agent = try Address(parsing: agentText) } catch {
            throw UsageError(message: "--agent: \(error)", command: name)
        }
        do { listen = try Address(parsing: listenText) } catch {
            throw UsageError(message: "--listen: \(error)", command: name)
        }
        var configuration = RelayConfiguration(agent: agent, listen: listen)
        if let text = parsed.value("agent-timeout") { configuration.agentTimeout = try parseDuration(text, option: "--agent-timeout", command: name) }
        if let text = parsed.value("ping-interval") { configuration.pingInterval = try parseDuration(text, option: "--ping-interval", command: name) }
        if let text = parsed.value("unresponsive-after") {
            configuration.unresponsiveAfter = try parseDuration(text, option: "--unresponsive-after", command: name)
        }
        if let text = parsed.value("replay-bytes") { configuration.replayBytes = try parseByteCount(text, option: "--replay-bytes", command: name) }
        if let text = parsed.value("name") { configuration.name = text }
        if let text = parsed.value("tunnel") {
            do { configuration.tunnel = try Address(parsing: text) } catch {
                throw UsageError(message: "--tunnel: \(error)", command: name)
            }
        }
        configuration.portsFile = parsed.value("ports-file")
        if let text = parsed.value("max-clients") {
            guard let n = Int(text), n >= 1 else { throw UsageError(message: "--max-clients: '\(text)' is not a count of at least 1", command: name) }
            configuration.maxClients = n
        }
        if parsed.has("no-seccomp") {
            ErrorBlock.warning("--no-seccomp: the relay parses bytes from the guest without its seccomp confinement")
        } else {
            configuration.afterSetup = { try RelayConfinement.apply() }
        }
        guard configuration.pingInterval > .zero, configuration.unresponsiveAfter > .zero else {
            throw UsageError(message: "--ping-interval and --unresponsive-after must be above zero", command: name)
        }
        if !parsed.has("no-log") {
            let directory: String
            if let dir = parsed.value("log-dir") {
                directory = dir
            } else if case .unix(let path) = listen {
                directory = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
            } else {
                throw UsageError(message: "--listen is not a unix path: give --log-dir DIR or --no-log", command: name)
            }
            var log = ExecLog.Configuration(directory: directory)
            if let text = parsed.value("log-max-bytes") { log.maxFileBytes = max(1, try parseByteCount(text, option: "--log-max-bytes", command: name)) }
            if let text = parsed.value("log-files") {
                guard let n = Int(text), n >= 1 else { throw UsageError(message: "--log-files: '\(text)' is not a count of at least 1", command: name) }
                log.files = n
            }
            log.recordsStdin = parsed.has("log-stdin")
            configuration.log = log
        }
        return configuration
    }
}
