import Foundation
import TetherClient
import TetherProtocol

/// Which relay a command talks to: `--socket unix:PATH`, else `--sandbox NAME`, else the
/// TETHER_SOCKET environment variable.
enum RelayTarget {
    /// The options every relay-talking command takes.
    static let options: [OptionSpec] = [
        OptionSpec("--socket", value: true), OptionSpec("--sandbox", value: true), OptionSpec("--connect-timeout", value: true),
        OptionSpec("--agent-timeout", value: true),
    ]

    static let helpLines = """
              --socket unix:PATH
                                the relay's socket (default: $TETHER_SOCKET)
              --sandbox NAME    the relay of a sandbox started with `tether boot`
              --connect-timeout D
                                how long to keep retrying while the relay or its agent
                                is not ready yet (default 10s)
              --agent-timeout D
                                how long a command waits on an agent that stopped answering
                                before it fails with agentUnresponsive (default 10s; 0: for ever)
        """

    /// The client options for a command: the socket, the retry budget, the client's name.
    static func clientOptions(_ arguments: ParsedArguments, command: String) throws -> ClientOptions {
        var options = ClientOptions(socket: try resolve(arguments, command: command))
        options.name = "tether " + command
        // A session waiting on a silent agent would otherwise look like a hang. (Requests such
        // as ping fail with the same news anyway.)
        if let text = arguments.value("connect-timeout") {
            options.retryBudget = try parseDuration(text, option: "--connect-timeout", command: command)
        }
        if let text = arguments.value("agent-timeout") {
            let timeout = try parseDuration(text, option: "--agent-timeout", command: command)
            options.agentTimeout = timeout == .zero ? nil : timeout
        }
        let deadline = options.agentTimeout.map { "; giving up \(Duration.describe(milliseconds: $0.milliseconds)) after its last answer" }
        if ["exec", "shell", "attach"].contains(command) { options.onNotice = { error in
            ErrorBlock.warning("\(error.message) (\(error.code)); still waiting" + (deadline ?? ""),
                               hint: "the sandbox may be overloaded or stuck; tether ps, tether ping, or interrupt")
        } }
        return options
    }

    static func resolve(_ arguments: ParsedArguments, command: String,
                        environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Address {
        if arguments.value("socket") != nil && arguments.value("sandbox") != nil {
            throw UsageError(message: "--socket and --sandbox name the relay twice; give one", command: command)
        }
        if let socket = arguments.value("socket") { return try address(socket, from: "--socket", command: command) }
        if let name = arguments.value("sandbox") { return try SandboxResolution.socket(ofSandbox: name) }
        if let socket = environment["TETHER_SOCKET"], !socket.isEmpty {
            return try address(socket, from: "TETHER_SOCKET", command: command)
        }
        throw CLIError(message: "no relay to talk to", hint: "pass --socket unix:PATH (or --sandbox NAME), or set TETHER_SOCKET",
                       exitStatus: CLIExit.usage, code: "noRelay")
    }

    private static func address(_ text: String, from source: String, command: String) throws -> Address {
        // A bare path is taken as unix:PATH, what people type first.
        let spelled = text.hasPrefix("/") || text.hasPrefix(".") ? "unix:" + text : text
        do { return try Address(parsing: spelled) } catch {
            throw UsageError(message: "\(source): '\(text)' is not an address (\(error))", command: command)
        }
    }
}
