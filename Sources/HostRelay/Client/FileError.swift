import Foundation
import TetherPosix
import TetherProtocol

/// Why a files call failed: the guest's file system refused (`file`: kind, operation, path and
/// errno, from an `fsError`), or the call never got that far (`client`: the connection, the
/// relay, a bad payload; see `TetherError`).
public enum FileError: Error, Sendable, Equatable, CustomStringConvertible {
    case file(FsError)
    case client(TetherError)

    /// The guest's kind of failure, when the guest answered.
    public var kind: FileErrorKind? {
        if case .file(let failure) = self { return failure.kind }
        return nil
    }

    public var description: String {
        switch self {
        case .file(let f):
            let text = f.message.isEmpty ? "\(f.op) \(f.path?.description ?? ""): \(f.kind)" : f.message
            return "\(f.kind): \(text)"
        case .client(let error): return error.description
        }
    }

    /// One JSON object, as the CLI prints with `--json`: `code` is the file error kind (or the
    /// library's code), with `op`, `path` and `errno` when the guest answered.
    public var json: String {
        switch self {
        case .client(let error): return error.json
        case .file(let f):
            var object: [String: Any] = ["code": f.kind.rawValue, "operation": f.op, "message": f.message]
            if let path = f.path { object["path"] = path.description }
            if let errno = f.errno { object["errno"] = Int(errno) }
            guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return "{}" }
            return String(decoding: data, as: UTF8.self)
        }
    }

    public static func local(_ kind: FileErrorKind, op: String, path: String, _ message: String) -> FileError {
        .file(FsError(kind: kind, op: op, path: OSString(path), message: message))
    }
}

/// Who a files call acts as, and where relative paths start.
public struct FileScopeOptions: Sendable, Equatable {
    /// "name", "uid", "name:group" or "uid:gid" in the guest; nil: root.
    public var user: String?
    /// Relative paths are relative to this; nil: "/".
    public var cwd: String?
    public init(user: String? = nil, cwd: String? = nil) {
        self.user = user
        self.cwd = cwd
    }
}

/// How `write` puts a file in place.
public struct FileWriteOptions: Sendable, Equatable {
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var parents = false
    public var ifAbsent = false
    public var append = false
    public var offset: UInt64?
    public var limit: UInt64?
    public init(mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil, parents: Bool = false, ifAbsent: Bool = false,
                append: Bool = false, offset: UInt64? = nil, limit: UInt64? = nil) {
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.parents = parents
        self.ifAbsent = ifAbsent
        self.append = append
        self.offset = offset
        self.limit = limit
    }
}

/// What a finished transfer moved.
public struct FileTransferResult: Sendable, Equatable {
    public var bytes: UInt64
    public var sha256: [UInt8]
    public var sha256Hex: String { SHA256.hex(sha256) }
}
