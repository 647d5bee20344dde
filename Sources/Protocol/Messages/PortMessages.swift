// Exposed ports (kinds 0x40-0x4F; every kind is listed in Frame.swift). Capability `port/1`.
//
// A client asks the relay to listen on a host address; each connection accepted there is
// carried to the agent over a separate endpoint (the tunnel socket, not the agent's framed
// connection), and the agent connects to the guest's 127.0.0.1, then ::1, then the guest's
// own addresses, on the guest port.
//
// Relay requests (a client to a relay; the relay answers them itself):
//
// | kind | name         | direction        | payload                                               |
// | 0x40 | exposePort   | to relay, START  | `{guestPort, hostPort?, hostAddr?, name?, check?}`    |
// | 0x41 | portExposed  | reply, END       | `{port: PortInfo}`                                    |
// | 0x42 | unexposePort | to relay, START  | `{guestPort}`; reply `done {}` END                    |
// | 0x43 | listPorts    | to relay, START  | `{}`                                                  |
// | 0x44 | portList     | reply, END       | `{ports: [PortInfo]}`                                 |
//
// The tunnel endpoint (relay to agent, one connection per tunnelled connection): the relay's
// first bytes are one frame `tunnelOpen` on id 0, the agent's first bytes one frame
// `tunnelOpened` or `error` on id 0; after `tunnelOpened` both directions carry the
// connection's raw bytes, after `error` the agent closes.
//
// | 0x45 | tunnelOpen   | relay to agent   | `{guestPort, request, probe?}`                        |
// | 0x46 | tunnelOpened | agent to relay   | `{address?, listeners?}`                              |

extension FrameKind {
    public static let exposePort = FrameKind(rawValue: 0x40)
    public static let portExposed = FrameKind(rawValue: 0x41)
    public static let unexposePort = FrameKind(rawValue: 0x42)
    public static let listPorts = FrameKind(rawValue: 0x43)
    public static let portList = FrameKind(rawValue: 0x44)
    public static let tunnelOpen = FrameKind(rawValue: 0x45)
    public static let tunnelOpened = FrameKind(rawValue: 0x46)

    static let portKinds: [FrameKind] = [.exposePort, .portExposed, .unexposePort, .listPorts, .portList,
                                         .tunnelOpen, .tunnelOpened]

    var portKindName: String? {
        switch self {
        case .exposePort: "exposePort"
        case .portExposed: "portExposed"
        case .unexposePort: "unexposePort"
        case .listPorts: "listPorts"
        case .portList: "portList"
        case .tunnelOpen: "tunnelOpen"
        case .tunnelOpened: "tunnelOpened"
        default: nil
        }
    }

    /// The port requests a relay answers itself (they never reach the agent).
    public var isPortRequest: Bool { self == .exposePort || self == .unexposePort || self == .listPorts }
}

/// Expose a guest port on the host (`tether port expose`).
public struct ExposePort: Message {
    public static let kind = FrameKind.exposePort
    /// The guest's TCP port. Wider than 16 bits on the wire so that an out-of-range port is
    /// the relay's typed `invalidPort`, not an undecodable payload.
    public var guestPort: UInt32
    /// The host port; nil or 0: one the kernel picks.
    public var hostPort: UInt32?
    /// The host address to listen on (numeric IPv4 or IPv6); nil: 127.0.0.1.
    public var hostAddress: String?
    /// A label for people (`port ls`).
    public var name: String?
    /// Refuse with `serviceNotResponding` when nothing listens on the guest port (default true).
    public var check: Bool

    public init(guestPort: UInt32, hostPort: UInt32? = nil, hostAddress: String? = nil, name: String? = nil, check: Bool = true) {
        self.guestPort = guestPort
        self.hostPort = hostPort
        self.hostAddress = hostAddress
        self.name = name
        self.check = check
    }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("guestPort", guestPort)
        map.entry("hostPort", hostPort)
        map.entry("hostAddr", hostAddress)
        map.entry("name", name)
        map.entry("check", check ? nil : false)
    }

    public init(from r: MessageReader) throws(MessageError) {
        guestPort = try r.integer("guestPort")
        hostPort = try r.optionalInteger("hostPort")
        hostAddress = try r.optionalText("hostAddr")
        name = try r.optionalText("name")
        check = try r.optionalBool("check") ?? true
    }
}

/// One exposed port, as `portExposed` and `portList` report it.
public struct PortInfo: Hashable, Sendable {
    public var guestPort: UInt16
    public var hostAddress: String
    public var hostPort: UInt16
    public var name: String?
    /// The relay holds its listening socket (false: it could not bind it again after a
    /// restart; `problem` says why).
    public var listening: Bool
    public var problem: String?
    /// Host connections accepted since the relay started, and how many of them the agent
    /// refused (nothing accepted on the guest port); the last refusal as `code: message`.
    public var connections: UInt64
    public var refusals: UInt64
    public var lastRefusal: String?

    public init(guestPort: UInt16, hostAddress: String, hostPort: UInt16, name: String? = nil, listening: Bool = true,
                problem: String? = nil, connections: UInt64 = 0, refusals: UInt64 = 0, lastRefusal: String? = nil) {
        self.guestPort = guestPort
        self.hostAddress = hostAddress
        self.hostPort = hostPort
        self.name = name
        self.listening = listening
        self.problem = problem
        self.connections = connections
        self.refusals = refusals
        self.lastRefusal = lastRefusal
    }

    /// `127.0.0.1:8080` or `[::1]:8080`: what a browser or curl takes.
    public var hostEndpoint: String {
        hostAddress.contains(":") ? "[\(hostAddress)]:\(hostPort)" : "\(hostAddress):\(hostPort)"
    }

    func encode(to writer: inout CBORWriter) {
        writer.map { m in
            m.entry("guestPort", guestPort)
            m.entry("hostAddr", hostAddress)
            m.entry("hostPort", hostPort)
            m.entry("name", name)
            m.entry("listening", listening ? nil : false)
            m.entry("problem", problem)
            m.entry("connections", connections == 0 ? nil : connections)
            m.entry("refusals", refusals == 0 ? nil : refusals)
            m.entry("lastRefusal", lastRefusal)
        }
    }

    init(from r: MessageReader) throws(MessageError) {
        guestPort = try r.integer("guestPort")
        hostAddress = try r.text("hostAddr")
        hostPort = try r.integer("hostPort")
        name = try r.optionalText("name")
        listening = try r.optionalBool("listening") ?? true
        problem = try r.optionalText("problem")
        connections = try r.optionalInteger("connections") ?? 0
        refusals = try r.optionalInteger("refusals") ?? 0
        lastRefusal = try r.optionalText("lastRefusal")
    }
}

public struct PortExposed: Message {
    public static let kind = FrameKind.portExposed
    public var port: PortInfo
    public init(port: PortInfo) { self.port = port }
    public func encode(to map: inout CBORWriter.MapWriter) { map.entry("port") { port.encode(to: &$0) } }
    public init(from r: MessageReader) throws(MessageError) {
        guard let reader = try r.optionalReader("port") else { throw .missingKey("port") }
        port = try PortInfo(from: reader)
    }
}

/// Stop exposing a guest port; answered `done {}` END, or `error{portNotExposed}` END.
public struct UnexposePort: Message {
    public static let kind = FrameKind.unexposePort
    public var guestPort: UInt32
    public init(guestPort: UInt32) { self.guestPort = guestPort }
    public func encode(to map: inout CBORWriter.MapWriter) { map.entry("guestPort", guestPort) }
    public init(from r: MessageReader) throws(MessageError) { guestPort = try r.integer("guestPort") }
}

public struct ListPorts: Message {
    public static let kind = FrameKind.listPorts
    public init() {}
    public func encode(to map: inout CBORWriter.MapWriter) {}
    public init(from r: MessageReader) throws(MessageError) {}
}

public struct PortList: Message {
    public static let kind = FrameKind.portList
    public var ports: [PortInfo]
    public init(ports: [PortInfo]) { self.ports = ports }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("ports") { w in
            w.arrayHeader(count: ports.count)
            for port in ports { port.encode(to: &w) }
        }
    }

    public init(from r: MessageReader) throws(MessageError) {
        let value = try r.value("ports")
        guard case .array(let items) = value else { throw .wrongType(key: "ports", expected: "an array", found: value.typeName) }
        ports = []
        for item in items {
            guard case .map(let map) = item else { throw .wrongType(key: "ports", expected: "an array of maps", found: item.typeName) }
            ports.append(try PortInfo(from: MessageReader(map, path: "ports")))
        }
    }
}

/// The relay's first frame on a tunnel connection: connect to this guest port (or, with
/// `probe`, only say whether something listens there).
public struct TunnelOpen: Message {
    public static let kind = FrameKind.tunnelOpen
    public var guestPort: UInt16
    /// The relay's number for this connection, for both sides' logs.
    public var request: UInt64
    public var probe: Bool

    public init(guestPort: UInt16, request: UInt64, probe: Bool = false) {
        self.guestPort = guestPort
        self.request = request
        self.probe = probe
    }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("guestPort", guestPort)
        map.entry("request", request)
        map.entry("probe", probe ? true : nil)
    }

    public init(from r: MessageReader) throws(MessageError) {
        guestPort = try r.integer("guestPort")
        guard guestPort != 0 else { throw .invalidValue(key: "guestPort", reason: "0 is not a port") }
        request = try r.integer("request")
        probe = try r.optionalBool("probe") ?? false
    }
}

/// The agent's answer: connected (to `address`), or for a probe, what listens on the port.
public struct TunnelOpened: Message {
    public static let kind = FrameKind.tunnelOpened
    /// The guest address the agent connected to (`127.0.0.1:8080`); nil for a probe.
    public var address: String?
    /// A probe's answer: the bind addresses of the sockets listening on the port.
    public var listeners: [String]?

    public init(address: String? = nil, listeners: [String]? = nil) {
        self.address = address
        self.listeners = listeners
    }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("address", address)
        map.entry("listeners", listeners)
    }

    public init(from r: MessageReader) throws(MessageError) {
        address = try r.optionalText("address")
        listeners = try r.optionalTextArray("listeners")
    }
}

/// Reads the one frame that opens each side of a tunnel connection, from bytes that may
/// arrive in pieces and may be followed by the tunnel's own bytes. A peer gets at most
/// `maxBytes` for it: anything longer is not a tunnel preamble.
public enum TunnelPreamble {
    public static let maxBytes = 4096

    public enum Failure: Error, Equatable, Sendable, CustomStringConvertible {
        case framing(WireError)
        case tooLong(length: UInt32)
        case notOnControlChannel(id: UInt32)

        public var description: String {
            switch self {
            case .framing(let error): error.description
            case .tooLong(let length): "a tunnel preamble of \(length) bytes is above the limit of \(TunnelPreamble.maxBytes)"
            case .notOnControlChannel(let id): "a tunnel preamble must be on id 0, not \(id)"
            }
        }
    }

    /// The preamble frame and the bytes it took, or nil while more bytes are needed.
    public static func decode(_ bytes: ArraySlice<UInt8>) throws(Failure) -> (frame: Frame, consumed: Int)? {
        guard bytes.count >= 4 else { return nil }
        let start = bytes.startIndex
        let length = UInt32(bytes[start]) << 24 | UInt32(bytes[start + 1]) << 16 | UInt32(bytes[start + 2]) << 8 | UInt32(bytes[start + 3])
        guard length >= UInt32(Frame.headerBytesAfterLength) else { throw .framing(.frameTooSmall(length: length)) }
        guard Int(length) + 4 <= maxBytes else { throw .tooLong(length: length) }
        let total = Int(length) + 4
        guard bytes.count >= total else { return nil }
        var decoder = FrameDecoder()
        decoder.append(bytes.prefix(total))
        let frame: Frame?
        do { frame = try decoder.next() } catch { throw .framing(error) }
        guard let frame else { return nil }
        guard frame.id == 0 else { throw .notOnControlChannel(id: frame.id) }
        return (frame, total)
    }

    /// The bytes of one preamble frame.
    public static func encode<M: Message>(_ message: M, flags: FrameFlags = []) -> [UInt8] {
        var encoder = FrameEncoder()
        encoder.append(id: 0, flags: flags, kind: M.kind, payload: message.cborBytes)
        return encoder.withPendingBytes { Array($0) }
    }
}
