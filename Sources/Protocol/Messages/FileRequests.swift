// Files requests that change the tree or move bytes (kinds listed in FileMessages.swift).

public struct FsMkdir: Message {
    public static let kind = FrameKind.fsMkdir
    public var scope: FileScope
    public var mode: UInt32
    /// Create missing parents too, and succeed when the directory exists (`mkdir -p`).
    public var parents: Bool
    public init(_ scope: FileScope, mode: UInt32 = 0o755, parents: Bool = false) {
        self.scope = scope
        self.mode = mode
        self.parents = parents
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        scope.encode(to: &map)
        map.entry("mode", mode)
        map.entry("parents", parents ? true : nil)
    }
    public init(from r: MessageReader) throws(MessageError) {
        scope = try FileScope(from: r)
        mode = try r.optionalInteger("mode") ?? 0o755
        parents = try r.optionalBool("parents") ?? false
        guard mode <= 0o7777 else { throw .invalidValue(key: "mode", reason: "\(mode) has bits beyond 0o7777") }
    }
}

public struct FsRemove: Message {
    public static let kind = FrameKind.fsRemove
    public var scope: FileScope
    /// Remove a directory with everything below it (`rm -r`); without it a directory must be empty.
    public var recursive: Bool
    public init(_ scope: FileScope, recursive: Bool = false) {
        self.scope = scope
        self.recursive = recursive
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        scope.encode(to: &map)
        map.entry("recursive", recursive ? true : nil)
    }
    public init(from r: MessageReader) throws(MessageError) {
        scope = try FileScope(from: r)
        recursive = try r.optionalBool("recursive") ?? false
    }
}

public struct FsRename: Message {
    public static let kind = FrameKind.fsRename
    /// `path` is the source; `to` the destination (relative to `cwd` too).
    public var scope: FileScope
    public var to: OSString
    /// Replace an existing destination; default false (`fileExists`).
    public var overwrite: Bool
    public init(_ scope: FileScope, to: OSString, overwrite: Bool = false) {
        self.scope = scope
        self.to = to
        self.overwrite = overwrite
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        scope.encode(to: &map, pathKey: "from")
        map.entry("to") { to.write(to: &$0) }
        map.entry("overwrite", overwrite ? true : nil)
    }
    public init(from r: MessageReader) throws(MessageError) {
        scope = try FileScope(from: r, pathKey: "from")
        guard let to = try r.optionalOSString("to") else { throw .missingKey("to") }
        self.to = to
        overwrite = try r.optionalBool("overwrite") ?? false
    }
}

public struct FsSetattr: Message {
    public static let kind = FrameKind.fsSetattr
    public var scope: FileScope
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public init(_ scope: FileScope, mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil) {
        self.scope = scope
        self.mode = mode
        self.uid = uid
        self.gid = gid
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        scope.encode(to: &map)
        map.entry("mode", mode)
        map.entry("uid", uid)
        map.entry("gid", gid)
    }
    public init(from r: MessageReader) throws(MessageError) {
        scope = try FileScope(from: r)
        mode = try r.optionalInteger("mode")
        uid = try r.optionalInteger("uid")
        gid = try r.optionalInteger("gid")
        if let mode, mode > 0o7777 { throw .invalidValue(key: "mode", reason: "\(mode) has bits beyond 0o7777") }
    }
}

public struct FsRead: Message {
    public static let kind = FrameKind.fsRead
    public var scope: FileScope
    public var offset: UInt64
    /// Bytes to read at most; default to the end of the file.
    public var length: UInt64?
    /// Refuse (`fileTooLarge`) a file bigger than this, before sending any byte.
    public var limit: UInt64?
    public init(_ scope: FileScope, offset: UInt64 = 0, length: UInt64? = nil, limit: UInt64? = nil) {
        self.scope = scope
        self.offset = offset
        self.length = length
        self.limit = limit
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        scope.encode(to: &map)
        map.entry("offset", offset == 0 ? nil : offset)
        map.entry("length", length)
        map.entry("limit", limit)
    }
    public init(from r: MessageReader) throws(MessageError) {
        scope = try FileScope(from: r)
        offset = try r.optionalInteger("offset") ?? 0
        length = try r.optionalInteger("length")
        limit = try r.optionalInteger("limit")
    }
}

public struct FsWrite: Message {
    public static let kind = FrameKind.fsWrite
    public var scope: FileScope
    /// Mode of the new file; default: the existing target's, else 0o644.
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    /// Create missing parent directories (0o755).
    public var parents: Bool
    /// Fail with `preconditionFailed` when the target exists.
    public var ifAbsent: Bool
    /// Append to the target in place (not atomic).
    public var append: Bool
    /// Write at this offset of the existing file in place (not atomic).
    public var offset: UInt64?
    /// The SHA-256 the bytes must have; checked before the file is put in place (`checksumMismatch`).
    public var sha256: [UInt8]?
    /// Refuse (`fileTooLarge`) more bytes than this.
    public var limit: UInt64?

    public init(_ scope: FileScope, mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil, parents: Bool = false,
                ifAbsent: Bool = false, append: Bool = false, offset: UInt64? = nil, sha256: [UInt8]? = nil, limit: UInt64? = nil) {
        self.scope = scope
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.parents = parents
        self.ifAbsent = ifAbsent
        self.append = append
        self.offset = offset
        self.sha256 = sha256
        self.limit = limit
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        scope.encode(to: &map)
        map.entry("mode", mode)
        map.entry("uid", uid)
        map.entry("gid", gid)
        map.entry("parents", parents ? true : nil)
        map.entry("ifAbsent", ifAbsent ? true : nil)
        map.entry("append", append ? true : nil)
        map.entry("offset", offset)
        if let sha256 { map.entry("sha256") { $0.byteString(sha256) } }
        map.entry("limit", limit)
    }
    public init(from r: MessageReader) throws(MessageError) {
        scope = try FileScope(from: r)
        mode = try r.optionalInteger("mode")
        uid = try r.optionalInteger("uid")
        gid = try r.optionalInteger("gid")
        parents = try r.optionalBool("parents") ?? false
        ifAbsent = try r.optionalBool("ifAbsent") ?? false
        append = try r.optionalBool("append") ?? false
        offset = try r.optionalInteger("offset")
        sha256 = try r.optionalBytes("sha256")
        limit = try r.optionalInteger("limit")
        if let mode, mode > 0o7777 { throw .invalidValue(key: "mode", reason: "\(mode) has bits beyond 0o7777") }
        if let sha256, sha256.count != 32 { throw .invalidValue(key: "sha256", reason: "\(sha256.count) bytes, not 32") }
        if append && offset != nil { throw .invalidValue(key: "offset", reason: "append and offset exclude each other") }
    }
}


/// A directory (and everything below it) as a tar stream.
public struct FsArchive: Message {
    public static let kind = FrameKind.fsArchive
    public var scope: FileScope
    public init(_ scope: FileScope) { self.scope = scope }
    public func encode(to map: inout CBORWriter.MapWriter) { scope.encode(to: &map) }
    public init(from r: MessageReader) throws(MessageError) { scope = try FileScope(from: r) }
}

/// A tar stream unpacked into a directory (made, with its parents, if missing).
public struct FsExtract: Message {
    public static let kind = FrameKind.fsExtract
    public var scope: FileScope
    /// Give entries the archive's uid and gid (else they belong to the request's user).
    public var owners: Bool
    public init(_ scope: FileScope, owners: Bool = false) {
        self.scope = scope
        self.owners = owners
    }
    public func encode(to map: inout CBORWriter.MapWriter) {
        scope.encode(to: &map)
        map.entry("owners", owners ? true : nil)
    }
    public init(from r: MessageReader) throws(MessageError) {
        scope = try FileScope(from: r)
        owners = try r.optionalBool("owners") ?? false
    }
}
