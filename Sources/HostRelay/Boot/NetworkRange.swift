#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An IPv4 or IPv6 range in CIDR notation (`10.0.0.0/8`, `192.0.2.7`, `fd00::/8`), as given to
/// `--allow-net`. A bare address is a /32 (/128). Bits set below the prefix are refused, so a
/// range always means what it says (`10.1.2.3/8` is a typing mistake, not `10.0.0.0/8`).
public struct NetworkRange: Hashable, Sendable, CustomStringConvertible {
    public enum Family: Sendable { case v4, v6 }

    /// Why a text is not a range.
    public struct ParseError: Error, Equatable, Sendable, CustomStringConvertible {
        public let text: String
        public let reason: String
        public var description: String { "'\(text)' is not a network range (\(reason)); write ADDR/BITS, e.g. 10.0.0.0/8 or fd00::/8" }
    }

    public let family: Family
    /// The network address, 4 or 16 bytes.
    public let bytes: [UInt8]
    public let prefixLength: Int

    public init(parsing text: String) throws(ParseError) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let address = String(parts[0])
        var parsed = [UInt8](repeating: 0, count: 16)
        if inet_pton(AF_INET, address, &parsed) == 1 {
            family = .v4
            bytes = Array(parsed[0..<4])
        } else if inet_pton(AF_INET6, address, &parsed) == 1 {
            family = .v6
            bytes = parsed
        } else {
            throw ParseError(text: text, reason: "'\(address)' is not an IPv4 or IPv6 address")
        }
        let maximum = bytes.count * 8
        if parts.count == 2 {
            guard let length = Int(parts[1]), (0...maximum).contains(length), parts[1].allSatisfy(\.isASCII) else {
                throw ParseError(text: text, reason: "the prefix length must be 0 to \(maximum)")
            }
            prefixLength = length
        } else {
            prefixLength = maximum
        }
        guard NetworkRange.masked(bytes, prefixLength) == bytes else {
            throw ParseError(text: text, reason: "bits are set after the first \(prefixLength); the range starts at \(NetworkRange.format(NetworkRange.masked(bytes, prefixLength), family))")
        }
    }

    /// Whether `address` (text) lies in this range.
    public func contains(_ address: String) -> Bool {
        guard let other = try? NetworkRange(parsing: address), other.family == family else { return false }
        return NetworkRange.masked(other.bytes, prefixLength) == bytes
    }

    /// The canonical text, as nft reads it.
    public var description: String { "\(NetworkRange.format(bytes, family))/\(prefixLength)" }

    static func masked(_ bytes: [UInt8], _ length: Int) -> [UInt8] {
        bytes.enumerated().map { index, byte in
            let bitsHere = max(0, min(8, length - index * 8))
            return bitsHere == 0 ? 0 : byte & UInt8(truncatingIfNeeded: 0xFF << (8 - bitsHere))
        }
    }

    static func format(_ bytes: [UInt8], _ family: Family) -> String {
        var text = [CChar](repeating: 0, count: 64)
        let result = bytes.withUnsafeBytes { raw in
            inet_ntop(family == .v4 ? AF_INET : AF_INET6, raw.baseAddress, &text, socklen_t(text.count))
        }
        guard result != nil else { return "?" }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
