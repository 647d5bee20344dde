#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// Why a files request failed, with the operation, the path and the errno: the agent's side
/// of an `fsError` frame. `init(op:path:errno:)` makes a failed call one, its kind from
/// `FileErrorKind(errno:)` (the table in docs/PROTOCOL.md, "Files").
struct FileFailure: Error, Equatable {
    var kind: FileErrorKind
    var op: String
    var path: OSString?
    var errno: CInt?
    var message: String

    init(_ kind: FileErrorKind, op: String, path: OSString?, errno: CInt? = nil, _ message: String) {
        self.kind = kind
        self.op = op
        self.path = path
        self.errno = errno
        self.message = message
    }

    /// A failed system call on `path`.
    init(op: String, path: OSString?, errno: Errno) {
        self.init(FileErrorKind(errno: errno.rawValue), op: op, path: path, errno: errno.rawValue,
                  "\(op) \(path?.description ?? ""): \(errno.message)")
    }

    var frame: FsError { FsError(kind: kind, op: op, path: path, errno: errno, message: message) }
}

/// Runs a system call that returns -1 and sets errno, retrying EINTR; a failure is a
/// `FileFailure` naming the operation and path.
@discardableResult
func fileCall<T: FixedWidthInteger>(_ op: String, _ path: OSString?, _ body: () -> T) throws(FileFailure) -> T {
    do { return try retrying(body) } catch { throw FileFailure(op: op, path: path, errno: error) }
}

/// The same for the C shims that return -errno.
@discardableResult
func fileShim(_ op: String, _ path: OSString?, _ result: CInt) throws(FileFailure) -> CInt {
    guard result < 0 else { return result }
    throw FileFailure(op: op, path: path, errno: Errno(rawValue: -result))
}
