/// A string as the kernel sees it: bytes without NUL, not necessarily UTF-8.
///
/// Linux file names, arguments and environment values are byte strings. Tether carries them as
/// CBOR text when they are valid UTF-8 (what every client writes by default) and as CBOR byte
/// strings otherwise, so a program can be given a non-UTF-8 file name without loss. A NUL byte
/// cannot reach execve(2); the agent rejects it as `badArgs` rather than truncating silently.
public struct OSString: Hashable, Sendable, ExpressibleByStringLiteral, CustomStringConvertible {
    public var bytes: [UInt8]

    public init(bytes: [UInt8]) { self.bytes = bytes }
    public init(_ string: String) { self.bytes = Array(string.utf8) }
    public init(stringLiteral value: String) { self.init(value) }

    /// The string when the bytes are valid UTF-8.
    public var string: String? { String(validating: bytes, as: UTF8.self) }

    /// UTF-8 text, with invalid sequences replaced (for messages and logs only).
    public var description: String { String(decoding: bytes, as: UTF8.self) }

    public var containsNUL: Bool { bytes.contains(0) }

    func write(to writer: inout CBORWriter) {
        if let string { writer.text(string) } else { writer.byteString(bytes) }
    }

    init(cbor value: CBORValue, key: String) throws(MessageError) {
        switch value {
        case .text(let text): self.init(text)
        case .bytes(let bytes): self.init(bytes: bytes)
        default: throw .wrongType(key: key, expected: "a text or byte string", found: value.typeName)
        }
    }
}

extension MessageReader {
    public func optionalOSString(_ key: String) throws(MessageError) -> OSString? {
        guard let value = optionalValue(key) else { return nil }
        return try OSString(cbor: value, key: name(key))
    }
}
