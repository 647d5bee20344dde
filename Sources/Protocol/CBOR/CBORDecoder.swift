/// What a CBOR decode can fail with. Offsets are byte offsets into the decoded input.
public enum CBORError: Error, Equatable, Sendable {
    /// The input ended inside an item.
    case truncated(offset: Int)
    /// Additional information 28, 29 or 30: reserved by RFC 8949.
    case reservedAdditionalInfo(offset: Int, value: UInt8)
    /// Indefinite length where it is not allowed (major types 0, 1, 6), or a chunk of an
    /// indefinite string that is not a definite string of the same major type.
    case invalidIndefiniteLength(offset: Int)
    /// A break (0xFF) outside an indefinite-length item.
    case unexpectedBreak(offset: Int)
    case invalidUTF8(offset: Int)
    /// A two-byte simple value below 32, which RFC 8949 calls not well-formed.
    case invalidSimpleValue(offset: Int, value: UInt8)
    /// A declared length or count that the remaining input cannot possibly hold.
    case lengthExceedsInput(offset: Int, declared: UInt64)
    case depthLimitExceeded(limit: Int)
    case itemLimitExceeded(limit: Int)
    case duplicateKey(offset: Int)
    /// Bytes left over after the single top-level item.
    case trailingBytes(offset: Int)
}

/// Limits a hostile peer cannot get past. String lengths are already bounded by the frame,
/// and every declared count is checked against the bytes that remain before anything is
/// allocated, so memory stays proportional to the input.
public struct CBORLimits: Sendable {
    /// Arrays, maps and tags nested deeper than this are rejected (keeps recursion bounded).
    public var maxDepth: Int
    /// Data items in one top-level item, counting every nested item.
    public var maxItems: Int

    public init(maxDepth: Int = 32, maxItems: Int = 65_536) {
        self.maxDepth = maxDepth
        self.maxItems = maxItems
    }
    public static let `default` = CBORLimits()
}

/// Decodes exactly one CBOR item from a byte buffer. Never traps on any input.
public struct CBORDecoder: ~Copyable {
    private let bytes: UnsafeRawBufferPointer
    private var offset = 0
    private var items = 0
    private let limits: CBORLimits

    private init(_ bytes: UnsafeRawBufferPointer, limits: CBORLimits) {
        self.bytes = bytes
        self.limits = limits
    }

    /// Decodes the single item that `bytes` must hold entirely.
    public static func decode(_ bytes: UnsafeRawBufferPointer, limits: CBORLimits = .default) throws(CBORError) -> CBORValue {
        var decoder = CBORDecoder(bytes, limits: limits)
        let value = try decoder.item(depth: 0)
        guard decoder.offset == bytes.count else { throw .trailingBytes(offset: decoder.offset) }
        return value
    }

    public static func decode(_ bytes: [UInt8], limits: CBORLimits = .default) throws(CBORError) -> CBORValue {
        try bytes.withBytes { (raw) throws(CBORError) -> CBORValue in try decode(raw, limits: limits) }
    }

    private var remaining: Int { bytes.count - offset }

    private mutating func byte() throws(CBORError) -> UInt8 {
        guard offset < bytes.count else { throw .truncated(offset: offset) }
        defer { offset += 1 }
        return bytes[offset]
    }

    private mutating func bigEndian(_ count: Int) throws(CBORError) -> UInt64 {
        guard remaining >= count else { throw .truncated(offset: offset) }
        var value: UInt64 = 0
        for i in 0..<count { value = value << 8 | UInt64(bytes[offset + i]) }
        offset += count
        return value
    }

    /// The argument of an initial byte; nil means indefinite length (additional info 31).
    private mutating func argument(_ info: UInt8, at start: Int) throws(CBORError) -> UInt64? {
        switch info {
        case 0...23: return UInt64(info)
        case 24: return try bigEndian(1)
        case 25: return try bigEndian(2)
        case 26: return try bigEndian(4)
        case 27: return try bigEndian(8)
        case 31: return nil
        default: throw .reservedAdditionalInfo(offset: start, value: info)
        }
    }

    /// Checks that `count` more items of at least `minimumBytes` each can fit in what remains,
    /// so a declared count of 2^64 is refused before any allocation.
    private func checkFits(_ count: UInt64, minimumBytes: UInt64, at start: Int) throws(CBORError) {
        let (needed, overflow) = count.multipliedReportingOverflow(by: minimumBytes)
        if overflow || needed > UInt64(remaining) { throw .lengthExceedsInput(offset: start, declared: count) }
    }

    private mutating func countItem() throws(CBORError) {
        items += 1
        if items > limits.maxItems { throw .itemLimitExceeded(limit: limits.maxItems) }
    }

    private mutating func item(depth: Int) throws(CBORError) -> CBORValue {
        guard depth <= limits.maxDepth else { throw .depthLimitExceeded(limit: limits.maxDepth) }
        try countItem()
        let start = offset
        let initial = try byte()
        let major = initial >> 5
        let info = initial & 0x1F
        if initial == 0xFF { throw .unexpectedBreak(offset: start) }

        switch major {
        case 0, 1:
            guard let n = try argument(info, at: start) else { throw .invalidIndefiniteLength(offset: start) }
            return major == 0 ? .unsigned(n) : .negative(n)
        case 2:
            return .bytes(try string(info, major: 2, at: start))
        case 3:
            let raw = try string(info, major: 3, at: start)
            guard let text = String(validating: raw, as: UTF8.self) else { throw .invalidUTF8(offset: start) }
            return .text(text)
        case 4:
            var elements: [CBORValue] = []
            if let count = try argument(info, at: start) {
                try checkFits(count, minimumBytes: 1, at: start)
                elements.reserveCapacity(Int(count))
                for _ in 0..<count { elements.append(try item(depth: depth + 1)) }
            } else {
                while try !atBreak() { elements.append(try item(depth: depth + 1)) }
            }
            return .array(elements)
        case 5:
            var map = CBORMap()
            var seenText = Set<String>()
            func add(_ key: CBORValue, _ value: CBORValue, at keyOffset: Int) throws(CBORError) {
                // Messages use text keys; other key types are rare, so they are checked by scan.
                if case .text(let k) = key {
                    guard seenText.insert(k).inserted else { throw .duplicateKey(offset: keyOffset) }
                } else if map.entries.contains(where: { $0.key == key }) {
                    throw .duplicateKey(offset: keyOffset)
                }
                map.entries.append((key, value))
            }
            if let count = try argument(info, at: start) {
                try checkFits(count, minimumBytes: 2, at: start)
                map.entries.reserveCapacity(Int(count))
                for _ in 0..<count {
                    let keyOffset = offset
                    let key = try item(depth: depth + 1)
                    try add(key, try item(depth: depth + 1), at: keyOffset)
                }
            } else {
                while try !atBreak() {
                    let keyOffset = offset
                    let key = try item(depth: depth + 1)
                    if remaining > 0, bytes[offset] == 0xFF { throw .unexpectedBreak(offset: offset) }
                    try add(key, try item(depth: depth + 1), at: keyOffset)
                }
            }
            return .map(map)
        case 6:
            guard let tag = try argument(info, at: start) else { throw .invalidIndefiniteLength(offset: start) }
            return .tagged(tag, try item(depth: depth + 1))
        default:  // 7: simple values and floats
            switch info {
            case 20: return .bool(false)
            case 21: return .bool(true)
            case 22: return .null
            case 23: return .undefined
            case 0...19: return .simple(info)
            case 24:
                let value = try byte()
                guard value >= 32 else { throw .invalidSimpleValue(offset: start, value: value) }
                return .simple(value)
            case 25: return .float(Double(halfToFloat(UInt16(try bigEndian(2)))))
            case 26: return .float(Double(Float(bitPattern: UInt32(try bigEndian(4)))))
            case 27: return .float(Double(bitPattern: try bigEndian(8)))
            default: throw .reservedAdditionalInfo(offset: start, value: info)  // 28...30; 31 is break
            }
        }
    }

    /// Consumes a break byte if one is next. Running out of input inside an
    /// indefinite-length item is truncation.
    private mutating func atBreak() throws(CBORError) -> Bool {
        guard offset < bytes.count else { throw .truncated(offset: offset) }
        if bytes[offset] == 0xFF {
            offset += 1
            return true
        }
        return false
    }

    /// The content of a byte or text string, definite or indefinite (concatenated chunks).
    private mutating func string(_ info: UInt8, major: UInt8, at start: Int) throws(CBORError) -> [UInt8] {
        if let length = try argument(info, at: start) {
            return try take(length, at: start)
        }
        var content: [UInt8] = []
        while try !atBreak() {
            let chunkStart = offset
            try countItem()
            let initial = try byte()
            guard initial >> 5 == major, let length = try argument(initial & 0x1F, at: chunkStart) else {
                throw .invalidIndefiniteLength(offset: chunkStart)
            }
            let chunk = try take(length, at: chunkStart)
            // Each chunk of a text string must itself be valid UTF-8 (RFC 8949, 3.2.3).
            if major == 3, String(validating: chunk, as: UTF8.self) == nil { throw .invalidUTF8(offset: chunkStart) }
            content += chunk
        }
        return content
    }

    private mutating func take(_ length: UInt64, at start: Int) throws(CBORError) -> [UInt8] {
        guard length <= UInt64(remaining) else {
            if remaining == 0 { throw .truncated(offset: offset) }
            throw .lengthExceedsInput(offset: start, declared: length)
        }
        let end = offset + Int(length)
        let slice = Array(bytes[offset..<end])
        offset = end
        return slice
    }
}

/// IEEE 754 binary16 to binary32, exactly (RFC 8949, Appendix D).
func halfToFloat(_ half: UInt16) -> Float {
    let sign: Float = half & 0x8000 != 0 ? -1 : 1
    let exponent = Int((half >> 10) & 0x1F)
    let mantissa = Float(half & 0x3FF)
    switch exponent {
    case 0: return sign * mantissa * 0x1p-24
    case 31: return mantissa == 0 ? sign * .infinity : .nan
    default: return sign * (1 + mantissa / 1024) * Float(sign: .plus, exponent: exponent - 15, significand: 1)
    }
}
