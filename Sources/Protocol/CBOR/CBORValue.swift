/// One decoded CBOR data item (RFC 8949). Integers keep CBOR's two-major-type split so that the
/// whole range -2^64 ... 2^64-1 round-trips without loss.
public indirect enum CBORValue: Hashable, Sendable {
    /// Major type 0.
    case unsigned(UInt64)
    /// Major type 1: the value is `-1 - n`.
    case negative(UInt64)
    case bytes([UInt8])
    case text(String)
    case array([CBORValue])
    case map(CBORMap)
    case tagged(UInt64, CBORValue)
    case bool(Bool)
    case null
    case undefined
    /// Simple values other than false/true/null/undefined.
    case simple(UInt8)
    /// Half, single and double precision all decode to `Double` (exactly).
    case float(Double)

    /// Integers in Int64 range, from either integer major type.
    public var int64: Int64? {
        switch self {
        case .unsigned(let n): return n <= UInt64(Int64.max) ? Int64(n) : nil
        case .negative(let n): return n <= UInt64(Int64.max) ? -1 - Int64(n) : nil
        default: return nil
        }
    }

    public static func int(_ value: Int64) -> CBORValue {
        value >= 0 ? .unsigned(UInt64(value)) : .negative(UInt64(-(value + 1)))
    }

    /// A short name of the item's type, for error messages.
    public var typeName: String {
        switch self {
        case .unsigned, .negative: "integer"
        case .bytes: "byte string"
        case .text: "text string"
        case .array: "array"
        case .map: "map"
        case .tagged: "tag"
        case .bool: "bool"
        case .null: "null"
        case .undefined: "undefined"
        case .simple: "simple value"
        case .float: "float"
        }
    }
}

/// A CBOR map in wire order. Messages are small, so lookups scan; keys are unique
/// (the decoder rejects duplicate keys, which would let two readers see different values).
public struct CBORMap: Hashable, Sendable {
    public var entries: [(key: CBORValue, value: CBORValue)]

    public init(_ entries: [(key: CBORValue, value: CBORValue)] = []) { self.entries = entries }

    public subscript(key: String) -> CBORValue? {
        for entry in entries {
            if case .text(let k) = entry.key, k == key { return entry.value }
        }
        return nil
    }

    public static func == (lhs: CBORMap, rhs: CBORMap) -> Bool {
        lhs.entries.count == rhs.entries.count
            && zip(lhs.entries, rhs.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(entries.count)
        for entry in entries {
            hasher.combine(entry.key)
            hasher.combine(entry.value)
        }
    }
}

extension CBORValue: CustomStringConvertible {
    /// RFC 8949 diagnostic notation (section 8), for logs and interop tests. Text escapes
    /// `"` and `\`, and writes other characters outside printable ASCII as `\u{HEX}`.
    public var description: String {
        switch self {
        case .unsigned(let n): return String(n)
        case .negative(let n): return n == .max ? "-18446744073709551616" : "-" + String(n + 1)
        case .bytes(let b):
            let hex = b.map { byte in
                let digits = String(byte, radix: 16)
                return digits.count == 1 ? "0" + digits : digits
            }
            return "h'" + hex.joined() + "'"
        case .text(let t):
            var out = "\""
            for scalar in t.unicodeScalars {
                switch scalar {
                case "\"", "\\": out += "\\" + String(scalar)
                case " "..."~": out.unicodeScalars.append(scalar)
                default: out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
                }
            }
            return out + "\""
        case .array(let items): return "[" + items.map(\.description).joined(separator: ", ") + "]"
        case .map(let map): return "{" + map.entries.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        case .tagged(let tag, let inner): return "\(tag)(\(inner))"
        case .bool(let b): return b ? "true" : "false"
        case .null: return "null"
        case .undefined: return "undefined"
        case .simple(let s): return "simple(\(s))"
        case .float(let d): return d.description
        }
    }
}
