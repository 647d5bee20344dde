// The files subsystem (kinds 0x30-0x3F; every kind is listed in Frame.swift), capability `fs/1`.
//
// | kind | name      | direction        | payload                                                   |
// | 0x30 | fsStat    | to server, START | `{path, cwd?, user?, follow?}` -> `fsInfo` (END)          |
// | 0x31 | fsInfo    | reply            | one file's attributes (END after fsStat; before data of fsRead) |
// | 0x32 | fsList    | to server, START | `{path, recursive?, limit?, cursor?}` -> `fsEntries` (END) |
// | 0x33 | fsEntries | reply, END       | `{entries, nextCursor?}`: one page                        |
// | 0x34 | fsMkdir   | to server, START | `{path, mode?, parents?}` -> `fsDone` (END)               |
// | 0x35 | fsRemove  | to server, START | `{path, recursive?}` -> `fsDone` (END)                    |
// | 0x36 | fsRename  | to server, START | `{from, to, overwrite?}` -> `fsDone` (END)                |
// | 0x37 | fsSetattr | to server, START | `{path, mode?, uid?, gid?}` -> `fsDone` (END)             |
// | 0x38 | fsRead    | to server, START | -> `fsInfo`, `stdout` data (acked), `fsDone{bytes, sha256}` |
// | 0x39 | fsWrite   | to server, START | then `stdin` data (acked by the server), END on the last  |
// |      |           |                  | -> `fsDone{bytes, sha256}` once the file is in place      |
// | 0x3A | fsArchive | to server, START | -> a directory as a tar stream in `stdout` data, `fsDone`  |
// | 0x3B | fsExtract | to server, START | then a tar stream in `stdin` data, END on the last        |
// |      |           |                  | -> `fsDone{bytes, sha256}` once every entry is in place   |
// | 0x3C | fsWatch   | to server, START | -> `fsEvents` until the client's `kill`, then `fsDone`    |
// | 0x3D | fsEvents  | from server      | `{events}`: a batch of inotify events, coalesced          |
// | 0x3E | fsDone    | reply, END       | `{bytes?, sha256?}`                                       |
// | 0x3F | fsError   | reply, END       | `{kind, op, path?, errno?, message?}`                     |
//
// File bytes travel in the exec data kinds (`stdout` from the server, `stdin` to it), so the
// windows of section 8 hold for them end to end and a relay forwards them unchanged.

extension FrameKind {
    public static let fsStat = FrameKind(rawValue: 0x30)
    public static let fsInfo = FrameKind(rawValue: 0x31)
    public static let fsList = FrameKind(rawValue: 0x32)
    public static let fsEntries = FrameKind(rawValue: 0x33)
    public static let fsMkdir = FrameKind(rawValue: 0x34)
    public static let fsRemove = FrameKind(rawValue: 0x35)
    public static let fsRename = FrameKind(rawValue: 0x36)
    public static let fsSetattr = FrameKind(rawValue: 0x37)
    public static let fsRead = FrameKind(rawValue: 0x38)
    public static let fsWrite = FrameKind(rawValue: 0x39)
    public static let fsArchive = FrameKind(rawValue: 0x3A)
    public static let fsExtract = FrameKind(rawValue: 0x3B)
    public static let fsWatch = FrameKind(rawValue: 0x3C)
    public static let fsEvents = FrameKind(rawValue: 0x3D)
    public static let fsDone = FrameKind(rawValue: 0x3E)
    public static let fsError = FrameKind(rawValue: 0x3F)

    static let fileKinds: [FrameKind] = [
        .fsStat, .fsInfo, .fsList, .fsEntries, .fsMkdir, .fsRemove, .fsRename, .fsSetattr, .fsRead, .fsWrite,
        .fsArchive, .fsExtract, .fsWatch, .fsEvents, .fsDone, .fsError,
    ]

    var fileKindName: String? {
        switch self {
        case .fsStat: "fsStat"
        case .fsInfo: "fsInfo"
        case .fsList: "fsList"
        case .fsEntries: "fsEntries"
        case .fsMkdir: "fsMkdir"
        case .fsRemove: "fsRemove"
        case .fsRename: "fsRename"
        case .fsSetattr: "fsSetattr"
        case .fsRead: "fsRead"
        case .fsWrite: "fsWrite"
        case .fsArchive: "fsArchive"
        case .fsExtract: "fsExtract"
        case .fsWatch: "fsWatch"
        case .fsEvents: "fsEvents"
        case .fsDone: "fsDone"
        case .fsError: "fsError"
        default: nil
        }
    }
}

/// Where a request acts and as whom: every files request carries these three keys.
public struct FileScope: Hashable, Sendable {
    /// Absolute, or relative to `cwd` (default "/").
    public var path: OSString
    public var cwd: OSString?
    /// "name", "uid", "name:group" or "uid:gid", as `exec`'s; default root.
    public var user: String?

    public init(path: OSString, cwd: OSString? = nil, user: String? = nil) {
        self.path = path
        self.cwd = cwd
        self.user = user
    }

    func encode(to map: inout CBORWriter.MapWriter, pathKey: String = "path") {
        map.entry(pathKey) { path.write(to: &$0) }
        if let cwd { map.entry("cwd") { cwd.write(to: &$0) } }
        map.entry("user", user)
    }

    init(from r: MessageReader, pathKey: String = "path") throws(MessageError) {
        guard let path = try r.optionalOSString(pathKey) else { throw .missingKey(r.name(pathKey)) }
        self.path = path
        cwd = try r.optionalOSString("cwd")
        user = try r.optionalText("user")
    }
}

/// What a directory entry is.
public enum FileType: String, Hashable, Sendable, Codable {
    case file, dir, symlink, other

    init(from r: MessageReader, key: String) throws(MessageError) {
        let name = try r.text(key)
        guard let type = FileType(rawValue: name) else {
            throw .invalidValue(key: r.name(key), reason: "'\(name)' is not file, dir, symlink or other")
        }
        self = type
    }
}

public struct FsStat: Message {
    public static let kind = FrameKind.fsStat
    public var scope: FileScope
    /// Follow a final symlink (stat) or describe the link itself (lstat). Default true.
    public var follow: Bool
    public init(_ scope: FileScope, follow: Bool = true) {
        self.scope = scope
        self.follow = follow
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        scope.encode(to: &map)
        map.entry("follow", follow ? nil : false)
    }
    public init(from r: MessageReader) throws(MessageError) {
        scope = try FileScope(from: r)
        follow = try r.optionalBool("follow") ?? true
    }
}

/// One file's attributes (`fsStat`'s answer, and the first frame of an `fsRead`).
public struct FsInfo: Message {
    public static let kind = FrameKind.fsInfo
    public var type: FileType
    public var size: UInt64
    /// Permission bits and set-id/sticky bits (`st_mode & 0o7777`).
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var mtimeNs: Int64
    public var atimeNs: Int64
    public var ctimeNs: Int64
    public var ino: UInt64
    public var nlink: UInt64
    /// A symlink's target (with `follow: false`).
    public var target: OSString?

    public init(type: FileType, size: UInt64, mode: UInt32, uid: UInt32, gid: UInt32, mtimeNs: Int64, atimeNs: Int64,
                ctimeNs: Int64, ino: UInt64, nlink: UInt64, target: OSString? = nil) {
        self.type = type
        self.size = size
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtimeNs = mtimeNs
        self.atimeNs = atimeNs
        self.ctimeNs = ctimeNs
        self.ino = ino
        self.nlink = nlink
        self.target = target
    }

    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("type", type.rawValue)
        map.entry("size", size)
        map.entry("mode", mode)
        map.entry("uid", uid)
        map.entry("gid", gid)
        map.entry("mtimeNs", mtimeNs)
        map.entry("atimeNs", atimeNs)
        map.entry("ctimeNs", ctimeNs)
        map.entry("ino", ino)
        map.entry("nlink", nlink)
        if let target { map.entry("target") { target.write(to: &$0) } }
    }

    public init(from r: MessageReader) throws(MessageError) {
        type = try FileType(from: r, key: "type")
        size = try r.integer("size")
        mode = try r.integer("mode")
        uid = try r.optionalInteger("uid") ?? 0
        gid = try r.optionalInteger("gid") ?? 0
        mtimeNs = try r.optionalInteger("mtimeNs") ?? 0
        atimeNs = try r.optionalInteger("atimeNs") ?? 0
        ctimeNs = try r.optionalInteger("ctimeNs") ?? 0
        ino = try r.optionalInteger("ino") ?? 0
        nlink = try r.optionalInteger("nlink") ?? 0
        target = try r.optionalOSString("target")
    }
}

public struct FsList: Message {
    public static let kind = FrameKind.fsList
    /// Entries one page holds at most, whatever `limit` asks.
    public static let maxLimit: UInt32 = 4096
    public var scope: FileScope
    public var recursive: Bool
    /// Entries per page (1 ... maxLimit; default 1000).
    public var limit: UInt32
    /// `nextCursor` of the page before; absent for the first page.
    public var cursor: [UInt8]?

    public init(_ scope: FileScope, recursive: Bool = false, limit: UInt32 = 1000, cursor: [UInt8]? = nil) {
        self.scope = scope
        self.recursive = recursive
        self.limit = limit
        self.cursor = cursor
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        scope.encode(to: &map)
        map.entry("recursive", recursive ? true : nil)
        map.entry("limit", limit)
        if let cursor { map.entry("cursor") { $0.byteString(cursor) } }
    }
    public init(from r: MessageReader) throws(MessageError) {
        scope = try FileScope(from: r)
        recursive = try r.optionalBool("recursive") ?? false
        limit = try r.optionalInteger("limit") ?? 1000
        guard (1...Self.maxLimit).contains(limit) else {
            throw .invalidValue(key: "limit", reason: "\(limit) is outside 1 ... \(Self.maxLimit)")
        }
        cursor = try r.optionalBytes("cursor")
    }
}

/// One entry of a listing; `name` is the path below the listed directory ("a/b" when recursive).
public struct FileEntry: Hashable, Sendable {
    public var name: OSString
    public var type: FileType
    public var size: UInt64
    public var mode: UInt32
    public var mtimeNs: Int64
    public init(name: OSString, type: FileType, size: UInt64, mode: UInt32, mtimeNs: Int64) {
        self.name = name
        self.type = type
        self.size = size
        self.mode = mode
        self.mtimeNs = mtimeNs
    }
}

public struct FsEntries: Message {
    public static let kind = FrameKind.fsEntries
    public var entries: [FileEntry]
    /// Absent on the last page.
    public var nextCursor: [UInt8]?
    public init(entries: [FileEntry], nextCursor: [UInt8]?) {
        self.entries = entries
        self.nextCursor = nextCursor
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        map.entry("entries") { w in
            w.arrayHeader(count: entries.count)
            for e in entries {
                w.map { m in
                    m.entry("name") { e.name.write(to: &$0) }
                    m.entry("type", e.type.rawValue)
                    m.entry("size", e.size)
                    m.entry("mode", e.mode)
                    m.entry("mtimeNs", e.mtimeNs)
                }
            }
        }
        if let nextCursor { map.entry("nextCursor") { $0.byteString(nextCursor) } }
    }
    public init(from r: MessageReader) throws(MessageError) {
        let value = try r.value("entries")
        guard case .array(let items) = value else { throw .wrongType(key: "entries", expected: "an array", found: value.typeName) }
        entries = []
        entries.reserveCapacity(items.count)
        for item in items {
            guard case .map(let map) = item else { throw .wrongType(key: "entries", expected: "an array of maps", found: item.typeName) }
            let e = MessageReader(map, path: "entries")
            guard let name = try e.optionalOSString("name") else { throw .missingKey("entries.name") }
            entries.append(FileEntry(name: name, type: try FileType(from: e, key: "type"), size: try e.optionalInteger("size") ?? 0,
                                     mode: try e.optionalInteger("mode") ?? 0, mtimeNs: try e.optionalInteger("mtimeNs") ?? 0))
        }
        nextCursor = try r.optionalBytes("nextCursor")
    }
}

