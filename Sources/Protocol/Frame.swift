/// Wire protocol version spoken by this build. Peers agree on the lower of the two versions.
public let protocolVersion: UInt32 = 1

/// One unit on the wire:
///
///     [len: u32 BE][id: u32 BE][flags: u8][kind: u8][payload: len-6 bytes]
///
/// `len` counts everything after itself, so it is at least `Frame.headerBytesAfterLength` (6)
/// and at most `Frame.maxLength` (1 MiB + 6).
public struct Frame: Equatable, Sendable {
    /// Bytes of `id`, `flags` and `kind`: what `len` counts besides the payload.
    public static let headerBytesAfterLength = 6
    /// The whole header including the length prefix.
    public static let headerBytes = 10
    /// Largest payload any frame may carry.
    public static let maxPayloadBytes = 1 << 20
    /// Largest value `len` may take.
    public static let maxLength = UInt32(maxPayloadBytes + headerBytesAfterLength)
    /// Largest payload a data frame (stdout, stderr, stdin) carries; senders split above it.
    public static let maxDataPayloadBytes = 64 << 10
    /// Byte offset of the session id inside an encoded frame; the relay rewrites it in place.
    public static let idOffset = 4

    /// Session (correlation) id; 0 is the connection's control channel.
    public var id: UInt32
    public var flags: FrameFlags
    public var kind: FrameKind
    public var payload: [UInt8]

    public init(id: UInt32, flags: FrameFlags = [], kind: FrameKind, payload: [UInt8] = []) {
        self.id = id
        self.flags = flags
        self.kind = kind
        self.payload = payload
    }

    /// Decodes the payload as the CBOR message `M`.
    public func decode<M: Message>(_ type: M.Type = M.self) throws(MessageError) -> M {
        try payload.withBytes { (raw) throws(MessageError) -> M in try M(cbor: raw) }
    }
}

/// Bit 0 END (last frame of this session), bit 1 START (first frame of a session).
public struct FrameFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let end = FrameFlags(rawValue: 1 << 0)
    public static let start = FrameFlags(rawValue: 1 << 1)
}

/// What a payload is. An open set: a kind this build does not know still travels and is
/// routed (the relay never decodes what it forwards); the receiver answers with an error.
public struct FrameKind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    // Connection control (id 0).
    public static let hello = FrameKind(rawValue: 0x01)
    public static let error = FrameKind(rawValue: 0x02)
    public static let ping = FrameKind(rawValue: 0x03)
    public static let pong = FrameKind(rawValue: 0x04)
    public static let shutdown = FrameKind(rawValue: 0x05)
    // Exec sessions.
    public static let exec = FrameKind(rawValue: 0x10)
    public static let started = FrameKind(rawValue: 0x11)
    public static let stdout = FrameKind(rawValue: 0x12)
    public static let stderr = FrameKind(rawValue: 0x13)
    public static let stdin = FrameKind(rawValue: 0x14)
    public static let stdinError = FrameKind(rawValue: 0x15)
    public static let exited = FrameKind(rawValue: 0x16)
    public static let done = FrameKind(rawValue: 0x17)
    public static let failed = FrameKind(rawValue: 0x18)
    public static let resize = FrameKind(rawValue: 0x19)
    public static let signal = FrameKind(rawValue: 0x1A)
    public static let kill = FrameKind(rawValue: 0x1B)
    public static let ack = FrameKind(rawValue: 0x1C)

    /// Kinds whose payload is raw bytes rather than one CBOR map.
    public var isData: Bool { self == .stdout || self == .stderr || self == .stdin }

    /// Kinds this build knows, in table order.
    public static let known: [FrameKind] = [
        .hello, .error, .ping, .pong, .shutdown,
        .exec, .started, .stdout, .stderr, .stdin, .stdinError, .exited, .done, .failed,
        .resize, .signal, .kill, .ack,
    ] + FrameKind.sessionRequests + FrameKind.relayRequests + FrameKind.fileKinds + FrameKind.portKinds + FrameKind.processKinds

    public var name: String? {
        switch self {
        case .hello: "hello"
        case .error: "error"
        case .ping: "ping"
        case .pong: "pong"
        case .shutdown: "shutdown"
        case .exec: "exec"
        case .started: "started"
        case .stdout: "stdout"
        case .stderr: "stderr"
        case .stdin: "stdin"
        case .stdinError: "stdinError"
        case .exited: "exited"
        case .done: "done"
        case .failed: "failed"
        case .resize: "resize"
        case .signal: "signal"
        case .kill: "kill"
        case .ack: "ack"
        default: sessionRequestName ?? relayRequestName ?? fileKindName ?? portKindName ?? processKindName
        }
    }

    public var description: String {
        let hex = String(rawValue, radix: 16)
        return "\(name ?? "unknown")(0x\(hex.count == 1 ? "0" + hex : hex))"
    }
}
