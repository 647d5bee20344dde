/// Tar streams for `fsArchive` and `fsExtract` (`tether cp -r`): ustar headers, with a pax
/// extended header ('x') in front of an entry whose name or link target does not fit in 100
/// bytes, or whose size, uid or gid does not fit its octal field. Directories, regular files
/// and symlinks travel; other entries (devices, fifos, hard links) are skipped by readers.
/// Written here once for the agent and the host; no third-party code.
public enum TarEntryType: Equatable, Sendable {
    case file, directory, symlink
    /// Anything else; its data (if any) is skipped.
    case other(UInt8)
}

public struct TarEntry: Equatable, Sendable {
    /// Relative, '/'-separated; a directory's name has no trailing slash here.
    public var name: [UInt8]
    public var type: TarEntryType
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    public var mtime: Int64
    public var linkName: [UInt8]

    public init(name: [UInt8], type: TarEntryType, mode: UInt32, uid: UInt32 = 0, gid: UInt32 = 0, size: UInt64 = 0,
                mtime: Int64 = 0, linkName: [UInt8] = []) {
        self.name = name
        self.type = type
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.mtime = mtime
        self.linkName = linkName
    }
}

public enum TarError: Error, Equatable, Sendable, CustomStringConvertible {
    case badChecksum(offset: UInt64)
    case badField(String, offset: UInt64)
    case paxTooLarge(UInt64)
    case truncated

    public var description: String {
        switch self {
        case .badChecksum(let offset): "a tar header at byte \(offset) has a bad checksum"
        case .badField(let field, let offset): "a tar header at byte \(offset) has an unreadable \(field)"
        case .paxTooLarge(let size): "a pax header of \(size) bytes (at most 65536 are read)"
        case .truncated: "the tar stream ended inside an entry"
        }
    }
}

public enum TarWriter {
    public static let blockBytes = 512

    /// The header block(s) of one entry (a pax header first when needed).
    public static func header(_ entry: TarEntry) -> [UInt8] {
        var pax: [(String, [UInt8])] = []
        var name = entry.name
        if entry.type == .directory { name.append(UInt8(ascii: "/")) }
        if name.count > 100 { pax.append(("path", name)) }
        if entry.linkName.count > 100 { pax.append(("linkpath", entry.linkName)) }
        if entry.size > 0o77777777777 { pax.append(("size", Array(String(entry.size).utf8))) }
        if entry.uid > 0o7777777 { pax.append(("uid", Array(String(entry.uid).utf8))) }
        if entry.gid > 0o7777777 { pax.append(("gid", Array(String(entry.gid).utf8))) }
        var out: [UInt8] = []
        if !pax.isEmpty {
            var records: [UInt8] = []
            for (key, value) in pax { records += record(key, value) }
            out += block(name: Array("PaxHeaders/".utf8) + name.suffix(80), type: UInt8(ascii: "x"), mode: 0o644, uid: 0, gid: 0,
                         size: UInt64(records.count), mtime: entry.mtime, linkName: [])
            out += records
            out += padding(UInt64(records.count))
        }
        let typeFlag: UInt8
        switch entry.type {
        case .file: typeFlag = UInt8(ascii: "0")
        case .directory: typeFlag = UInt8(ascii: "5")
        case .symlink: typeFlag = UInt8(ascii: "2")
        case .other(let flag): typeFlag = flag
        }
        out += block(name: Array(name.prefix(100)), type: typeFlag, mode: entry.mode, uid: min(entry.uid, 0o7777777),
                     gid: min(entry.gid, 0o7777777), size: entry.type == .file ? min(entry.size, 0o77777777777) : 0,
                     mtime: entry.mtime, linkName: Array(entry.linkName.prefix(100)))
        return out
    }

    /// Zeros that pad `size` bytes of data to a whole block.
    public static func padding(_ size: UInt64) -> [UInt8] {
        let rest = Int(size % UInt64(blockBytes))
        return rest == 0 ? [] : [UInt8](repeating: 0, count: blockBytes - rest)
    }

    /// Two zero blocks: the end of the archive.
    public static let trailer = [UInt8](repeating: 0, count: 2 * blockBytes)

    /// "LEN key=value\n", LEN counting the whole record including its own digits.
    static func record(_ key: String, _ value: [UInt8]) -> [UInt8] {
        let body = Array(" \(key)=".utf8) + value + [UInt8(ascii: "\n")]
        var length = body.count + 1
        while String(length).utf8.count + body.count != length { length = String(length).utf8.count + body.count }
        return Array(String(length).utf8) + body
    }

    private static func block(name: [UInt8], type: UInt8, mode: UInt32, uid: UInt32, gid: UInt32, size: UInt64, mtime: Int64,
                              linkName: [UInt8]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: blockBytes)
        func put(_ bytes: [UInt8], at offset: Int) { for (i, byte) in bytes.enumerated() { b[offset + i] = byte } }
        func octal(_ value: UInt64, width: Int) -> [UInt8] {
            let digits = String(value, radix: 8)
            return Array((String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits).utf8) + [0]
        }
        put(name, at: 0)
        put(octal(UInt64(mode & 0o7777), width: 8), at: 100)
        put(octal(UInt64(uid), width: 8), at: 108)
        put(octal(UInt64(gid), width: 8), at: 116)
        put(octal(size, width: 12), at: 124)
        put(octal(UInt64(max(0, min(mtime, 0o77777777777))), width: 12), at: 136)
        b[156] = type
        put(linkName, at: 157)
        put(Array("ustar".utf8) + [0] + Array("00".utf8), at: 257)
        for i in 148..<156 { b[i] = UInt8(ascii: " ") }
        let sum = b.reduce(0) { $0 + UInt64($1) }
        put(octal(sum, width: 7) + [UInt8(ascii: " ")], at: 148)
        return b
    }
}

/// Reads a tar stream fed in pieces of any size, bounded: it holds at most one header block
/// and one pax header (64 KiB), never an entry's data. Peer bytes: every field is checked and
/// a bad one throws.
public struct TarReader: Sendable {
    public enum Event: Equatable, Sendable {
        case entry(TarEntry)
        /// The next bytes of the current entry's data.
        case data([UInt8])
        /// The current entry's data is complete.
        case entryEnd
        /// The archive's end (a zero block).
        case end
    }

    private enum State: Equatable {
        case header
        case data(remaining: UInt64, padding: Int, emit: Bool)
        case pax(remaining: UInt64, padding: Int)
        case done
    }

    private var state = State.header
    private var block: [UInt8] = []
    private var paxBytes: [UInt8] = []
    private var overrides: [String: [UInt8]] = [:]
    private var offset: UInt64 = 0

    public init() {}

    public var isDone: Bool { state == .done }
    /// Whether the stream may end here (between entries).
    public var atBoundary: Bool { state == .header && block.isEmpty || state == .done }

    public mutating func feed(_ bytes: [UInt8]) throws(TarError) -> [Event] {
        var events: [Event] = []
        var i = 0
        while i < bytes.count {
            switch state {
            case .done:
                return events   // whatever follows the end (more zero blocks) is ignored
            case .header:
                let take = min(TarWriter.blockBytes - block.count, bytes.count - i)
                block += bytes[i..<(i + take)]
                i += take
                offset += UInt64(take)
                guard block.count == TarWriter.blockBytes else { continue }
                let header = block
                block.removeAll(keepingCapacity: true)
                if header.allSatisfy({ $0 == 0 }) {
                    state = .done
                    events.append(.end)
                    continue
                }
                try parse(header, into: &events)
            case .data(let remaining, let padding, let emit):
                if remaining > 0 {
                    let take = Int(min(remaining, UInt64(bytes.count - i)))
                    if emit { events.append(.data(Array(bytes[i..<(i + take)]))) }
                    i += take
                    offset += UInt64(take)
                    state = .data(remaining: remaining - UInt64(take), padding: padding, emit: emit)
                    if remaining - UInt64(take) == 0 && padding == 0 {
                        if emit { events.append(.entryEnd) }
                        state = .header
                    }
                } else {
                    let take = min(padding, bytes.count - i)
                    i += take
                    offset += UInt64(take)
                    if padding - take == 0 {
                        if emit { events.append(.entryEnd) }
                        state = .header
                    } else {
                        state = .data(remaining: 0, padding: padding - take, emit: emit)
                    }
                }
            case .pax(let remaining, let padding):
                if remaining > 0 {
                    let take = Int(min(remaining, UInt64(bytes.count - i)))
                    paxBytes += bytes[i..<(i + take)]
                    i += take
                    offset += UInt64(take)
                    state = .pax(remaining: remaining - UInt64(take), padding: padding)
                } else {
                    let take = min(padding, bytes.count - i)
                    i += take
                    offset += UInt64(take)
                    state = .pax(remaining: 0, padding: padding - take)
                }
                if case .pax(0, 0) = state {
                    overrides = Self.records(paxBytes)
                    paxBytes.removeAll()
                    state = .header
                }
            }
        }
        return events
    }

    /// The stream ended: fine between entries, else `truncated`.
    public func finish() throws(TarError) {
        guard atBoundary else { throw .truncated }
    }

    private mutating func parse(_ header: [UInt8], into events: inout [Event]) throws(TarError) {
        let at = offset - UInt64(TarWriter.blockBytes)
        guard let stored = Self.octal(header[148..<156]) else { throw .badField("checksum", offset: at) }
        var sum: UInt64 = 0
        for (index, byte) in header.enumerated() { sum += (148..<156).contains(index) ? 32 : UInt64(byte) }
        guard sum == stored else { throw .badChecksum(offset: at) }
        guard let size = overrides["size"].flatMap({ UInt64(String(decoding: $0, as: UTF8.self)) }) ?? Self.octal(header[124..<136]) else {
            throw .badField("size", offset: at)
        }
        let type = header[156]
        let padding = Int((UInt64(TarWriter.blockBytes) - size % UInt64(TarWriter.blockBytes)) % UInt64(TarWriter.blockBytes))
        if type == UInt8(ascii: "x") || type == UInt8(ascii: "g") {
            guard size <= 65536 else { throw .paxTooLarge(size) }
            if type == UInt8(ascii: "g") {
                state = size + UInt64(padding) == 0 ? .header : .data(remaining: size, padding: padding, emit: false)
            } else {
                state = .pax(remaining: size, padding: padding)
                if size == 0 { state = .header }
            }
            return
        }
        func field(_ range: Range<Int>) -> [UInt8] { Array(header[range].prefix { $0 != 0 }) }
        var name = overrides["path"] ?? field(0..<100)
        let magic = header[257..<262]
        if overrides["path"] == nil && Array(magic) == Array("ustar".utf8) {
            let prefix = field(345..<500)
            if !prefix.isEmpty { name = prefix + [UInt8(ascii: "/")] + name }
        }
        while name.count > 1 && name.last == UInt8(ascii: "/") { name.removeLast() }
        guard let mode = Self.octal(header[100..<108]), let uidField = Self.octal(header[108..<116]),
              let gidField = Self.octal(header[116..<124]) else { throw .badField("mode, uid or gid", offset: at) }
        let mtime = Self.octal(header[136..<148]) ?? 0
        let uid = overrides["uid"].flatMap { UInt32(String(decoding: $0, as: UTF8.self)) } ?? UInt32(truncatingIfNeeded: uidField)
        let gid = overrides["gid"].flatMap { UInt32(String(decoding: $0, as: UTF8.self)) } ?? UInt32(truncatingIfNeeded: gidField)
        let linkName = overrides["linkpath"] ?? field(157..<257)
        overrides = [:]
        let entryType: TarEntryType
        switch type {
        case UInt8(ascii: "0"), 0, UInt8(ascii: "7"): entryType = .file
        case UInt8(ascii: "5"): entryType = .directory
        case UInt8(ascii: "2"): entryType = .symlink
        default: entryType = .other(type)
        }
        // Only a file's size is data; a directory's or a link's declared size is skipped.
        let entry = TarEntry(name: name, type: entryType, mode: UInt32(truncatingIfNeeded: mode & 0o7777), uid: uid, gid: gid,
                             size: entryType == .file ? size : 0, mtime: Int64(clamping: mtime), linkName: linkName)
        events.append(.entry(entry))
        if size == 0 {
            events.append(.entryEnd)
            state = .header
        } else {
            state = .data(remaining: size, padding: padding, emit: entryType == .file)
            if entryType != .file { events.append(.entryEnd) }
        }
    }

    /// An octal field (spaces and NULs around the digits allowed); nil when it is not one.
    static func octal(_ field: ArraySlice<UInt8>) -> UInt64? {
        let digits = field.drop { $0 == UInt8(ascii: " ") || $0 == 0 }.prefix { $0 != 0 && $0 != UInt8(ascii: " ") }
        if field.allSatisfy({ $0 == 0 || $0 == UInt8(ascii: " ") }) { return 0 }
        guard !digits.isEmpty, digits.count <= 22 else { return nil }
        var value: UInt64 = 0
        for d in digits {
            guard d >= UInt8(ascii: "0"), d <= UInt8(ascii: "7") else { return nil }
            value = value << 3 | UInt64(d - UInt8(ascii: "0"))
        }
        return value
    }

    /// pax records "LEN key=value\n"; malformed ones are ignored.
    static func records(_ bytes: [UInt8]) -> [String: [UInt8]] {
        var result: [String: [UInt8]] = [:]
        var i = 0
        while i < bytes.count {
            guard let space = bytes[i...].firstIndex(of: UInt8(ascii: " ")),
                  let length = Int(String(decoding: bytes[i..<space], as: UTF8.self)), length > 0, i + length <= bytes.count,
                  bytes[i + length - 1] == UInt8(ascii: "\n") else { break }
            let record = bytes[(space + 1)..<(i + length - 1)]
            if let equals = record.firstIndex(of: UInt8(ascii: "=")) {
                result[String(decoding: record[..<equals], as: UTF8.self)] = Array(record[(equals + 1)...])
            }
            i += length
        }
        return result
    }
}
