/// Appends CBOR (RFC 8949, preferred serialization: shortest argument, definite lengths) to a
/// byte buffer. Messages write themselves through it directly, with no intermediate tree.
public struct CBORWriter: Sendable {
    public var bytes: [UInt8]

    public init(bytes: [UInt8] = []) { self.bytes = bytes }

    /// Writes a major type with its argument in the shortest form.
    @inline(__always)
    mutating func head(_ major: UInt8, _ argument: UInt64) {
        let m = major << 5
        switch argument {
        case 0..<24:
            bytes.append(m | UInt8(argument))
        case 24...0xFF:
            bytes.append(m | 24)
            bytes.append(UInt8(argument))
        case 0x100...0xFFFF:
            bytes.append(m | 25)
            appendBigEndian(argument, count: 2)
        case 0x1_0000...0xFFFF_FFFF:
            bytes.append(m | 26)
            appendBigEndian(argument, count: 4)
        default:
            bytes.append(m | 27)
            appendBigEndian(argument, count: 8)
        }
    }

    @inline(__always)
    private mutating func appendBigEndian(_ value: UInt64, count: Int) {
        for shift in stride(from: (count - 1) * 8, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }

    public mutating func unsigned(_ value: UInt64) { head(0, value) }

    public mutating func int(_ value: Int64) {
        if value >= 0 { head(0, UInt64(value)) } else { head(1, UInt64(-(value + 1))) }
    }

    public mutating func text(_ value: String) {
        var value = value
        value.withUTF8 { utf8 in
            head(3, UInt64(utf8.count))
            bytes.append(contentsOf: utf8)
        }
    }

    public mutating func byteString(_ value: some Collection<UInt8>) {
        head(2, UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    public mutating func bool(_ value: Bool) { bytes.append(value ? 0xF5 : 0xF4) }
    public mutating func null() { bytes.append(0xF6) }
    public mutating func arrayHeader(count: Int) { head(4, UInt64(count)) }
    public mutating func mapHeader(count: Int) { head(5, UInt64(count)) }

    public mutating func double(_ value: Double) {
        bytes.append(0xFB)
        appendBigEndian(value.bitPattern, count: 8)
    }

    /// Writes any decoded value back out (definite lengths, floats as doubles).
    public mutating func value(_ value: CBORValue) {
        switch value {
        case .unsigned(let n): head(0, n)
        case .negative(let n): head(1, n)
        case .bytes(let b): byteString(b)
        case .text(let t): text(t)
        case .array(let items):
            arrayHeader(count: items.count)
            for item in items { self.value(item) }
        case .map(let map):
            mapHeader(count: map.entries.count)
            for entry in map.entries {
                self.value(entry.key)
                self.value(entry.value)
            }
        case .tagged(let tag, let inner):
            head(6, tag)
            self.value(inner)
        case .bool(let b): bool(b)
        case .null: null()
        case .undefined: bytes.append(0xF7)
        case .simple(let s):
            if s < 24 { bytes.append(0xE0 | s) } else { bytes.append(0xF8); bytes.append(s) }
        case .float(let d): double(d)
        }
    }

    /// Writes a map whose entries are only known as they are produced: counts the entries
    /// and patches the header. Entries must be fewer than 24 (one header byte), which holds
    /// for every message in the protocol.
    public mutating func map(_ body: (inout MapWriter) -> Void) {
        let headerIndex = bytes.count
        bytes.append(0xA0)
        var writer = MapWriter(writer: self)
        self = CBORWriter()
        body(&writer)
        precondition(writer.count < 24, "message maps have fewer than 24 keys")
        self = writer.writer
        bytes[headerIndex] = 0xA0 | UInt8(writer.count)
    }

    /// Writes the entries of one map; optional values that are nil are left out.
    public struct MapWriter {
        fileprivate var writer: CBORWriter
        fileprivate var count = 0

        private mutating func key(_ key: String) {
            count += 1
            writer.text(key)
        }

        public mutating func entry(_ key: String, _ value: UInt64?) {
            guard let value else { return }
            self.key(key); writer.unsigned(value)
        }
        public mutating func entry(_ key: String, _ value: Int64?) {
            guard let value else { return }
            self.key(key); writer.int(value)
        }
        public mutating func entry(_ key: String, _ value: Int32?) { entry(key, value.map(Int64.init)) }
        public mutating func entry(_ key: String, _ value: UInt32?) { entry(key, value.map(UInt64.init)) }
        public mutating func entry(_ key: String, _ value: UInt16?) { entry(key, value.map(UInt64.init)) }
        public mutating func entry(_ key: String, _ value: String?) {
            guard let value else { return }
            self.key(key); writer.text(value)
        }
        public mutating func entry(_ key: String, _ value: Bool?) {
            guard let value else { return }
            self.key(key); writer.bool(value)
        }
        public mutating func entry(_ key: String, _ value: [String]?) {
            guard let value else { return }
            self.key(key)
            writer.arrayHeader(count: value.count)
            for item in value { writer.text(item) }
        }
        /// An entry whose value is written by `body` (exactly one item).
        public mutating func entry(_ key: String, _ body: (inout CBORWriter) -> Void) {
            self.key(key)
            body(&writer)
        }
    }
}
