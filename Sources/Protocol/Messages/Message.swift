/// Why a payload is not the message its kind says. Every case names the key at fault.
public enum MessageError: Error, Equatable, Sendable {
    case cbor(CBORError)
    /// The payload is valid CBOR but not a map.
    case notAMap(found: String)
    case missingKey(String)
    case wrongType(key: String, expected: String, found: String)
    /// The type is right but the value is not acceptable (out of range, unknown name, ...).
    case invalidValue(key: String, reason: String)

    public var description: String {
        switch self {
        case .cbor(let error): "payload is not valid CBOR: \(error)"
        case .notAMap(let found): "payload must be a CBOR map, found \(found)"
        case .missingKey(let key): "required key '\(key)' is missing"
        case .wrongType(let key, let expected, let found): "key '\(key)' must be \(expected), found \(found)"
        case .invalidValue(let key, let reason): "key '\(key)': \(reason)"
        }
    }
}

/// A CBOR-map payload of a known kind. Encoding writes straight into a buffer; decoding
/// ignores unknown keys and fills missing optional keys with their defaults.
public protocol Message: Sendable, Equatable {
    static var kind: FrameKind { get }
    func encode(to map: inout CBORWriter.MapWriter)
    init(from reader: MessageReader) throws(MessageError)
}

extension Message {
    /// Decodes a payload that must hold exactly one CBOR map.
    public init(cbor payload: UnsafeRawBufferPointer) throws(MessageError) {
        let value: CBORValue
        do { value = try CBORDecoder.decode(payload) } catch { throw .cbor(error) }
        guard case .map(let map) = value else { throw .notAMap(found: value.typeName) }
        try self.init(from: MessageReader(map))
    }

    public init(cbor payload: [UInt8]) throws(MessageError) {
        self = try payload.withBytes { (raw) throws(MessageError) -> Self in try Self(cbor: raw) }
    }

    public func encode(to writer: inout CBORWriter) {
        writer.map { map in encode(to: &map) }
    }

    /// The message's payload bytes (allocates; the hot paths use `FrameEncoder.append`).
    public var cborBytes: [UInt8] {
        var writer = CBORWriter()
        encode(to: &writer)
        return writer.bytes
    }
}

/// Typed access to the keys of a message map. Each accessor names its key in the error.
public struct MessageReader: Sendable {
    public let map: CBORMap
    /// Where this map sits in the message (`tty` for the map under key `tty`); empty at the top.
    public let path: String
    public init(_ map: CBORMap, path: String = "") {
        self.map = map
        self.path = path
    }

    /// The name errors use for `key`: `tty.rows` rather than `rows` inside a nested map.
    public func name(_ key: String) -> String { path.isEmpty ? key : path + "." + key }

    public func has(_ key: String) -> Bool {
        guard let value = map[key] else { return false }
        return value != .null
    }

    /// The value of a key; `null` counts as absent so that optional keys may be sent as null.
    public func optionalValue(_ key: String) -> CBORValue? {
        guard let value = map[key], value != .null else { return nil }
        return value
    }

    public func value(_ key: String) throws(MessageError) -> CBORValue {
        guard let value = optionalValue(key) else { throw .missingKey(name(key)) }
        return value
    }

    // MARK: integers

    public func optionalInteger<T: FixedWidthInteger>(_ key: String, as type: T.Type = T.self) throws(MessageError) -> T? {
        guard let value = optionalValue(key) else { return nil }
        return try Self.integer(value, key: name(key))
    }

    public func integer<T: FixedWidthInteger>(_ key: String, as type: T.Type = T.self) throws(MessageError) -> T {
        try Self.integer(try value(key), key: name(key))
    }

    public static func integer<T: FixedWidthInteger>(_ value: CBORValue, key: String, as type: T.Type = T.self) throws(MessageError) -> T {
        switch value {
        case .unsigned(let n):
            guard let result = T(exactly: n) else { throw .invalidValue(key: key, reason: "\(n) is out of range for \(T.self)") }
            return result
        case .negative(let n):
            // -1 - n, computed without overflowing when n is large.
            guard T.isSigned, let magnitude = T(exactly: n) else {
                throw .invalidValue(key: key, reason: "-1-\(n) is out of range for \(T.self)")
            }
            return -1 - magnitude
        default:
            throw .wrongType(key: key, expected: "an integer", found: value.typeName)
        }
    }

    // MARK: text, bool, bytes

    public func optionalText(_ key: String) throws(MessageError) -> String? {
        guard let value = optionalValue(key) else { return nil }
        guard case .text(let text) = value else { throw .wrongType(key: name(key), expected: "a text string", found: value.typeName) }
        return text
    }

    public func text(_ key: String) throws(MessageError) -> String {
        guard let text = try optionalText(key) else { throw .missingKey(name(key)) }
        return text
    }

    public func optionalBool(_ key: String) throws(MessageError) -> Bool? {
        guard let value = optionalValue(key) else { return nil }
        guard case .bool(let bool) = value else { throw .wrongType(key: name(key), expected: "a bool", found: value.typeName) }
        return bool
    }

    public func optionalTextArray(_ key: String) throws(MessageError) -> [String]? {
        guard let value = optionalValue(key) else { return nil }
        guard case .array(let items) = value else { throw .wrongType(key: name(key), expected: "an array of text", found: value.typeName) }
        var result: [String] = []
        result.reserveCapacity(items.count)
        for item in items {
            guard case .text(let text) = item else { throw .wrongType(key: name(key), expected: "an array of text", found: "an array holding \(item.typeName)") }
            result.append(text)
        }
        return result
    }

    public func optionalMap(_ key: String) throws(MessageError) -> CBORMap? {
        guard let value = optionalValue(key) else { return nil }
        guard case .map(let map) = value else { throw .wrongType(key: name(key), expected: "a map", found: value.typeName) }
        return map
    }

    /// A nested map read with the same rules, its keys named `outer.inner` in errors.
    public func optionalReader(_ key: String) throws(MessageError) -> MessageReader? {
        try optionalMap(key).map { MessageReader($0, path: name(key)) }
    }
}
