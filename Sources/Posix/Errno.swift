#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An errno from a failed call. Keeps the raw value; never forced into another type.
public struct Errno: Error, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: CInt
    public init(rawValue: CInt) { self.rawValue = rawValue }

    /// The calling thread's current errno.
    public static var current: Errno { Errno(rawValue: errno) }

    /// strerror(3) text, e.g. "No such file or directory".
    public var message: String { String(cString: strerror(rawValue)) }
    public var description: String { "\(Errno.symbol(rawValue) ?? "errno \(rawValue)") (\(message))" }

    /// Symbolic names of the errnos people meet in practice, for error messages.
    public static func symbol(_ code: CInt) -> String? {
        switch code {
        case EPERM: "EPERM"
        case ENOENT: "ENOENT"
        case ESRCH: "ESRCH"
        case EINTR: "EINTR"
        case EIO: "EIO"
        case E2BIG: "E2BIG"
        case ENOEXEC: "ENOEXEC"
        case EBADF: "EBADF"
        case ECHILD: "ECHILD"
        case EAGAIN: "EAGAIN"
        case ENOMEM: "ENOMEM"
        case EACCES: "EACCES"
        case EFAULT: "EFAULT"
        case EBUSY: "EBUSY"
        case EEXIST: "EEXIST"
        case ENOTDIR: "ENOTDIR"
        case EISDIR: "EISDIR"
        case EINVAL: "EINVAL"
        case ENFILE: "ENFILE"
        case EMFILE: "EMFILE"
        case ENOTTY: "ENOTTY"
        case ETXTBSY: "ETXTBSY"
        case ENOSPC: "ENOSPC"
        case EROFS: "EROFS"
        case EPIPE: "EPIPE"
        case ENAMETOOLONG: "ENAMETOOLONG"
        case ENOSYS: "ENOSYS"
        case ELOOP: "ELOOP"
        case ENOTSOCK: "ENOTSOCK"
        case EADDRINUSE: "EADDRINUSE"
        case EADDRNOTAVAIL: "EADDRNOTAVAIL"
        case ECONNRESET: "ECONNRESET"
        case ETIMEDOUT: "ETIMEDOUT"
        case ECONNREFUSED: "ECONNREFUSED"
        case EAFNOSUPPORT: "EAFNOSUPPORT"
        case ENODEV: "ENODEV"
        case ENOTSUP: "ENOTSUP"
        case ELIBBAD: "ELIBBAD"
        default: nil
        }
    }
}

/// Runs a syscall wrapper, retrying on EINTR; -1 becomes a thrown `Errno` read before
/// anything else can overwrite errno. Not for close(2): after a failed close the fd is gone.
@inline(__always)
public func retrying<T: FixedWidthInteger>(_ body: () -> T) throws(Errno) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = errno
        if code != EINTR { throw Errno(rawValue: code) }
    }
}

/// For shim functions that return -errno instead of setting errno.
@inline(__always)
public func negativeErrno<T: FixedWidthInteger & SignedInteger>(_ result: T) throws(Errno) -> T {
    if result < 0 { throw Errno(rawValue: CInt(truncatingIfNeeded: -result)) }
    return result
}
