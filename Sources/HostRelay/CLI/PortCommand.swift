import Foundation
import TetherClient
import TetherProtocol

/// `tether port expose|unexpose|ls`
enum PortCommand: Command {
    static let name = "port"
    static let summary = "expose a sandbox's TCP port on the host"
    static let help = """
        usage: tether port expose [OPTIONS] GUESTPORT [--host-port N] [--host-addr ADDR] [--name LABEL]
               tether port unexpose [OPTIONS] GUESTPORT
               tether port ls [OPTIONS]

        expose: the relay listens on ADDR:N on the host and carries each connection to the
        guest's 127.0.0.1 (then ::1, then the guest's own addresses) on GUESTPORT, in every
        network mode, none included. Prints the host address (ADDR:PORT). First the agent is
        asked whether anything listens on GUESTPORT: nothing is serviceNotResponding, with
        where things do listen. Exposed ports survive a relay restart and end with the sandbox.
        unexpose: stop listening (connections already open go on). ls: the exposed ports.

        Options:
              --host-port N     the host port (default: one the kernel picks)
              --host-addr ADDR  the host address to listen on, numeric IPv4 or IPv6
                                (default 127.0.0.1; 0.0.0.0 opens it to the network)
              --name LABEL      a label `port ls` shows
              --no-check        expose even when nothing listens in the guest yet
              --json            (ls) one JSON array instead of a table
        \(RelayTarget.helpLines)
          -h, --help            this text

        """

    /// --json (ls as JSON) is one of `TetherCLI.commonOptions`.
    static let options: [OptionSpec] = [
        OptionSpec("--host-port", value: true), OptionSpec("--host-addr", value: true), OptionSpec("--name", value: true),
        OptionSpec("--no-check"),
    ] + RelayTarget.options

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            guard let action = parsed.positionals.first else { throw UsageError(message: "give expose, unexpose or ls", command: name) }
            let rest = Array(parsed.positionals.dropFirst())
            let clientOptions = try RelayTarget.clientOptions(parsed, command: name)
            switch action {
            case "expose":
                guard rest.count == 1 else { throw UsageError(message: "expose takes one GUESTPORT", command: name) }
                let guestPort = try number(rest[0], what: "GUESTPORT")
                let hostPort = try parsed.value("host-port").map { try number($0, what: "--host-port") }
                let hostAddress = parsed.value("host-addr")
                let label = parsed.value("name")
                let check = !parsed.has("no-check")
                return withClient(clientOptions) { client async throws(TetherError) -> Int32 in
                    let port = try await client.ports.expose(guestPort: guestPort, hostPort: hostPort, hostAddress: hostAddress,
                                                             name: label, check: check)
                    writeStandardOutput(port.hostEndpoint + "\n")
                    return 0
                }
            case "unexpose":
                guard rest.count == 1 else { throw UsageError(message: "unexpose takes one GUESTPORT", command: name) }
                let guestPort = try number(rest[0], what: "GUESTPORT")
                return withClient(clientOptions) { client async throws(TetherError) -> Int32 in
                    try await client.ports.unexpose(guestPort: guestPort)
                    return 0
                }
            case "ls", "list":
                guard rest.isEmpty else { throw UsageError(message: "unexpected \(rest[0])", command: name) }
                let json = parsed.has("json")
                return withClient(clientOptions) { client async throws(TetherError) -> Int32 in
                    let ports = try await client.ports.list()
                    writeStandardOutput(json ? renderJSON(ports) : renderTable(ports))
                    return 0
                }
            default:
                throw UsageError(message: "unknown action '\(action)': give expose, unexpose or ls", command: name)
            }
        }
    }

    /// A port as typed: digits only. The range (1-65535) is the relay's to check, so that
    /// every client gets the same typed `invalidPort`.
    static func number(_ text: String, what: String) throws -> UInt32 {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let value = UInt32(text) else {
            throw UsageError(message: "\(what): '\(text)' is not a port number", command: name)
        }
        return value
    }

    static func renderTable(_ ports: [PortInfo]) -> String {
        var rows = [["GUEST", "HOST", "NAME", "STATE", "CONNECTIONS"]]
        for port in ports {
            var state = port.listening ? "listening" : "not listening: \(port.problem ?? "?")"
            if let refusal = port.lastRefusal { state += " (last refused: \(refusal))" }
            rows.append([String(port.guestPort), port.hostEndpoint, port.name ?? "-", state,
                         "\(port.connections)" + (port.refusals > 0 ? " (\(port.refusals) refused)" : "")])
        }
        return TextTable.render(rows)
    }

    static func renderJSON(_ ports: [PortInfo]) -> String {
        let objects: [[String: Any]] = ports.map { p in
            var object: [String: Any] = ["guestPort": p.guestPort, "hostAddr": p.hostAddress, "hostPort": p.hostPort,
                                         "listening": p.listening, "connections": p.connections, "refusals": p.refusals]
            if let name = p.name { object["name"] = name }
            if let problem = p.problem { object["problem"] = problem }
            if let refusal = p.lastRefusal { object["lastRefusal"] = refusal }
            return object
        }
        return JSONText.render(objects, fallback: "[]") + "\n"
    }
}
