// Watching, and the two ends of every files request (kinds listed in FileMessages.swift).

public struct FsWatch: Message {
    public static let kind = FrameKind.fsWatch
    public var scope: FileScope
    public var recursive: Bool
    /// Names (one path component, exact) whose events are not reported and below which nothing is watched.
    public var exclude: [String]
    public init(_ scope: FileScope, recursive: Bool = false, exclude: [String] = []) {
        self.scope = scope
        self.recursive = recursive
        self.exclude = exclude
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        scope.encode(to: &map)
        map.entry("recursive", recursive ? true : nil)
        map.entry("exclude", exclude.isEmpty ? nil : exclude)
    }
    public init(from r: MessageReader) throws(MessageError) {
        scope = try FileScope(from: r)
        recursive = try r.optionalBool("recursive") ?? false
        exclude = try r.optionalTextArray("exclude") ?? []
    }
}

/// What happened to a watched path.
public enum FileEventType: String, Hashable, Sendable, Codable {
    case create, modify, delete, moveFrom, moveTo, attrib, overflow
}

public struct FileEvent: Hashable, Sendable {
    public var type: FileEventType
    /// Below the watched path ("" for the watched path itself and for `overflow`).
    public var path: OSString
    /// Pairs a `moveFrom` with its `moveTo` (inotify's cookie); absent otherwise.
    public var cookie: UInt32?
    public init(type: FileEventType, path: OSString, cookie: UInt32? = nil) {
        self.type = type
        self.path = path
        self.cookie = cookie
    }
}

public struct FsEvents: Message {
    public static let kind = FrameKind.fsEvents
    public var events: [FileEvent]
    public init(events: [FileEvent]) { self.events = events }
    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("events") { w in
            w.arrayHeader(count: events.count)
            for e in events {
                w.map { m in
                    m.entry("type", e.type.rawValue)
                    m.entry("path") { e.path.write(to: &$0) }
                    m.entry("cookie", e.cookie)
                }
            }
        }
    }
    public init(from r: MessageReader) throws(MessageError) {
        let value = try r.value("events")
        guard case .array(let items) = value else { throw .wrongType(key: "events", expected: "an array", found: value.typeName) }
        events = []
        for item in items {
            guard case .map(let map) = item else { throw .wrongType(key: "events", expected: "an array of maps", found: item.typeName) }
            let e = MessageReader(map, path: "events")
            let name = try e.text("type")
            guard let type = FileEventType(rawValue: name) else { throw .invalidValue(key: "events.type", reason: "unknown event '\(name)'") }
            events.append(FileEvent(type: type, path: try e.optionalOSString("path") ?? OSString(bytes: []),
                                    cookie: try e.optionalInteger("cookie")))
        }
    }
}

/// The end of a files request that succeeded.
public struct FsDone: Message {
    public static let kind = FrameKind.fsDone
    /// File bytes sent (fsRead) or written (fsWrite).
    public var bytes: UInt64?
    /// SHA-256 of those bytes.
    public var sha256: [UInt8]?
    public init(bytes: UInt64? = nil, sha256: [UInt8]? = nil) {
        self.bytes = bytes
        self.sha256 = sha256
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("bytes", bytes)
        if let sha256 { map.entry("sha256") { $0.byteString(sha256) } }
    }
    public init(from r: MessageReader) throws(MessageError) {
        bytes = try r.optionalInteger("bytes")
        sha256 = try r.optionalBytes("sha256")
    }
}

/// The end of a files request that failed: what, where, and the errno behind it.
public struct FsError: Message, Error {
    public static let kind = FrameKind.fsError
    public var kind: FileErrorKind
    /// The operation: "stat", "open", "mkdir", "rename", "write", "fsync", ...
    public var op: String
    public var path: OSString?
    public var errno: Int32?
    public var message: String
    public init(kind: FileErrorKind, op: String, path: OSString?, errno: Int32? = nil, message: String = "") {
        self.kind = kind
        self.op = op
        self.path = path
        self.errno = errno
        self.message = message
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("kind", kind.rawValue)
        map.entry("op", op)
        if let path { map.entry("path") { path.write(to: &$0) } }
        map.entry("errno", errno)
        map.entry("message", message.isEmpty ? nil : message)
    }
    public init(from r: MessageReader) throws(MessageError) {
        kind = FileErrorKind(rawValue: try r.text("kind"))
        op = try r.optionalText("op") ?? ""
        path = try r.optionalOSString("path")
        errno = try r.optionalInteger("errno")
        message = try r.optionalText("message") ?? ""
    }
}

extension MessageReader {
    public func optionalBytes(_ key: String) throws(MessageError) -> [UInt8]? {
        guard let value = optionalValue(key) else { return nil }
        guard case .bytes(let bytes) = value else { throw .wrongType(key: name(key), expected: "a byte string", found: value.typeName) }
        return bytes
    }
}
