import TetherProtocol

/// What the command line asks for:
///
///     tether-agent [--listen ADDR | --connect ADDR] [--tunnel ADDR] [--hostname NAME] [--nameserver ADDR]
///                  [--init PATH|auto] [--seccomp default|restricted|none]
///
/// `--listen` defaults to `vsock:2695`. Options may also be written `--name=value`.
public struct AgentOptions: Equatable, Sendable {
    /// Where the host's relay reaches the agent.
    public enum Endpoint: Equatable, Sendable {
        /// Accept connections, one at a time. `fd:N` may also be an already connected stream.
        case listen(Address)
        /// Dial the host, and dial again whenever the connection closes.
        case connect(Address)
    }

    /// An init system to hand PID 1 to (`--init PATH|auto`).
    public enum InitProgram: Equatable, Sendable {
        case path(String)
        /// The first of /sbin/init, /lib/systemd/systemd, /usr/lib/systemd/systemd,
        /// /sbin/openrc-init, busybox init that exists (and is not this agent).
        case auto
    }

    public static let defaultPort: UInt32 = 2695
    public static let usage = "usage: tether-agent [--listen ADDR | --connect ADDR] [--tunnel ADDR] [--hostname NAME]\n"
        + "                    [--nameserver ADDR] [--init PATH|auto] [--seccomp default|restricted|none]\n"
        + "  ADDR is vsock:PORT, vsock:CID:PORT, unix:PATH or fd:N (default --listen vsock:\(defaultPort))\n"
        + "  --tunnel: a second listening endpoint, one connection per tunnelled TCP connection of an\n"
        + "            exposed port (docs/PROTOCOL.md, \"Exposed ports\"); none: ports cannot be reached\n"
        + "  --seccomp: the profile of execs whose request does not name one (default: default;\n"
        + "             none turns the filter off, with a warning)"

    public var endpoint: Endpoint = .listen(.vsock(cid: nil, port: defaultPort))
    /// Where the relay opens tunnelled connections to guest ports (`--tunnel`, listening).
    public var tunnel: Address?
    public var hostname: String?
    /// `--nameserver ADDR` (repeatable): written to /etc/resolv.conf at boot (PID 1 only); the
    /// host passes the address its network component answers DNS on.
    public var nameservers: [String] = []
    public var initProgram: InitProgram?
    /// The seccomp profile of an exec whose request does not say (`--seccomp`).
    public var seccomp: SeccompProfile = .default
    /// `--help` or `--version`: print and exit 0.
    public var helpRequested = false
    public var versionRequested = false

    public init() {}

    /// A command line the agent cannot follow; main prints it with the usage and exits 2
    /// (except as PID 1, which logs it and carries on with the defaults).
    public struct ArgumentError: Error, Equatable, Sendable {
        public let message: String
    }

    /// Parses the arguments after the program name.
    public init(parsing arguments: [String]) throws(ArgumentError) {
        var endpointGiven = false
        var index = 0
        func value(for option: String, inline: String?) throws(ArgumentError) -> String {
            if let inline { return inline }
            index += 1
            guard index < arguments.count else { throw ArgumentError(message: "\(option) needs a value") }
            return arguments[index]
        }
        func address(_ text: String, option: String) throws(ArgumentError) -> Address {
            do { return try Address(parsing: text) } catch {
                switch error {
                case .unknownScheme(let scheme):
                    throw ArgumentError(message: "\(option): unknown address scheme '\(scheme)' (use vsock:, unix: or fd:)")
                case .invalid(_, let reason):
                    throw ArgumentError(message: "\(option) \(text): \(reason)")
                }
            }
        }
        while index < arguments.count {
            let argument = arguments[index]
            var name = argument
            var inline: String?
            if argument.hasPrefix("--"), let equals = argument.firstIndex(of: "=") {
                name = String(argument[..<equals])
                inline = String(argument[argument.index(after: equals)...])
            }
            switch name {
            case "--listen", "--connect":
                guard !endpointGiven else { throw ArgumentError(message: "give one --listen or --connect, not several") }
                endpointGiven = true
                let text = try value(for: name, inline: inline)
                let parsed = try address(text, option: name)
                if case .hvsock = parsed {
                    throw ArgumentError(message: "\(name) \(text): hvsock: is a host-side address; inside the guest use vsock:")
                }
                endpoint = name == "--listen" ? .listen(parsed) : .connect(parsed)
            case "--tunnel":
                let text = try value(for: name, inline: inline)
                let parsed = try address(text, option: name)
                if case .hvsock = parsed {
                    throw ArgumentError(message: "--tunnel \(text): hvsock: is a host-side address; inside the guest use vsock:")
                }
                tunnel = parsed
            case "--hostname":
                let text = try value(for: name, inline: inline)
                guard !text.isEmpty, text.utf8.count <= 64, !text.contains("/") else {
                    throw ArgumentError(message: "--hostname: '\(text)' is not a host name (1-64 bytes)")
                }
                hostname = text
            case "--nameserver":
                let text = try value(for: name, inline: inline)
                // An address only: it becomes a line of /etc/resolv.conf.
                guard !text.isEmpty, text.utf8.count <= 45, text.allSatisfy({ $0.isHexDigit || $0 == "." || $0 == ":" }) else {
                    throw ArgumentError(message: "--nameserver: '\(text)' is not an IP address")
                }
                nameservers.append(text)
            case "--init":
                let text = try value(for: name, inline: inline)
                if text == "auto" {
                    initProgram = .auto
                } else {
                    guard text.hasPrefix("/") else { throw ArgumentError(message: "--init: '\(text)' must be an absolute path or 'auto'") }
                    initProgram = .path(text)
                }
            case "--seccomp":
                let text = try value(for: name, inline: inline)
                guard let profile = SeccompProfile(rawValue: text) else {
                    throw ArgumentError(message: "--seccomp: '\(text)' is not a profile (\(SeccompProfile.spellings))")
                }
                seccomp = profile
            case "--help", "-h":
                helpRequested = true
            case "--version":
                versionRequested = true
            default:
                throw ArgumentError(message: argument.hasPrefix("-") ? "unknown option \(argument)" : "unexpected argument '\(argument)'")
            }
            index += 1
        }
    }
}
