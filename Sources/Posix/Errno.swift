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
    public static func symbol(_ code: CInt) -> String? { named[code] }

    private static let named: [CInt: String] = [
        EPERM: "EPERM",
        ENOENT: "ENOENT",
        ESRCH: "ESRCH",
        EINTR: "EINTR",
        EIO: "EIO",
        E2BIG: "E2BIG",
        ENOEXEC: "ENOEXEC",
        EBADF: "EBADF",
        ECHILD: "ECHILD",
        EAGAIN: "EAGAIN",
        ENOMEM: "ENOMEM",
        EACCES: "EACCES",
        EFAULT: "EFAULT",
        EBUSY: "EBUSY",
        EEXIST: "EEXIST",
        ENOTDIR: "ENOTDIR",
        EISDIR: "EISDIR",
        EINVAL: "EINVAL",
        ENFILE: "ENFILE",
        EMFILE: "EMFILE",
        ENOTTY: "ENOTTY",
        ETXTBSY: "ETXTBSY",
        ENOSPC: "ENOSPC",
        EROFS: "EROFS",
        EPIPE: "EPIPE",
        ENAMETOOLONG: "ENAMETOOLONG",
        ENOSYS: "ENOSYS",
        ELOOP: "ELOOP",
        ENOTSOCK: "ENOTSOCK",
        EADDRINUSE: "EADDRINUSE",
        EADDRNOTAVAIL: "EADDRNOTAVAIL",
        ECONNRESET: "ECONNRESET",
        ETIMEDOUT: "ETIMEDOUT",
        ECONNREFUSED: "ECONNREFUSED",
        EAFNOSUPPORT: "EAFNOSUPPORT",
        ENODEV: "ENODEV",
        ENOTSUP: "ENOTSUP",
        ELIBBAD: "ELIBBAD",
        ECANCELED: "ECANCELED",
        EINPROGRESS: "EINPROGRESS",
        ESPIPE: "ESPIPE",
        ENXIO: "ENXIO",
        EMLINK: "EMLINK",
    ]
}

/// Named errnos, so code reads `error == .pipe` instead of comparing raw numbers. The C symbol
/// is beside each; `symbol(_:)` gives it back for messages.
extension Errno {
    /// EPERM
    public static let notPermitted = Errno(rawValue: EPERM)
    /// ENOENT
    public static let noEntry = Errno(rawValue: ENOENT)
    /// ESRCH
    public static let noProcess = Errno(rawValue: ESRCH)
    /// EINTR
    public static let interrupted = Errno(rawValue: EINTR)
    /// EIO
    public static let io = Errno(rawValue: EIO)
    /// E2BIG
    public static let argumentListTooLong = Errno(rawValue: E2BIG)
    /// ENOEXEC
    public static let execFormat = Errno(rawValue: ENOEXEC)
    /// EBADF
    public static let badDescriptor = Errno(rawValue: EBADF)
    /// ECHILD
    public static let noChild = Errno(rawValue: ECHILD)
    /// EAGAIN
    public static let again = Errno(rawValue: EAGAIN)
    /// ENOMEM
    public static let noMemory = Errno(rawValue: ENOMEM)
    /// EACCES
    public static let accessDenied = Errno(rawValue: EACCES)
    /// EFAULT
    public static let fault = Errno(rawValue: EFAULT)
    /// EBUSY
    public static let busy = Errno(rawValue: EBUSY)
    /// EEXIST
    public static let exists = Errno(rawValue: EEXIST)
    /// ENOTDIR
    public static let notDirectory = Errno(rawValue: ENOTDIR)
    /// EISDIR
    public static let isDirectory = Errno(rawValue: EISDIR)
    /// EINVAL
    public static let invalid = Errno(rawValue: EINVAL)
    /// ENFILE
    public static let fileTableOverflow = Errno(rawValue: ENFILE)
    /// EMFILE
    public static let tooManyOpenFiles = Errno(rawValue: EMFILE)
    /// ENOTTY
    public static let notTerminal = Errno(rawValue: ENOTTY)
    /// ETXTBSY
    public static let textBusy = Errno(rawValue: ETXTBSY)
    /// ENOSPC
    public static let noSpace = Errno(rawValue: ENOSPC)
    /// EROFS
    public static let readOnlyFileSystem = Errno(rawValue: EROFS)
    /// EPIPE
    public static let pipe = Errno(rawValue: EPIPE)
    /// ENAMETOOLONG
    public static let nameTooLong = Errno(rawValue: ENAMETOOLONG)
    /// ENOSYS
    public static let notImplemented = Errno(rawValue: ENOSYS)
    /// ELOOP
    public static let loop = Errno(rawValue: ELOOP)
    /// ENOTSOCK
    public static let notSocket = Errno(rawValue: ENOTSOCK)
    /// EADDRINUSE
    public static let addressInUse = Errno(rawValue: EADDRINUSE)
    /// EADDRNOTAVAIL
    public static let addressNotAvailable = Errno(rawValue: EADDRNOTAVAIL)
    /// ECONNRESET
    public static let connectionReset = Errno(rawValue: ECONNRESET)
    /// ETIMEDOUT
    public static let timedOut = Errno(rawValue: ETIMEDOUT)
    /// ECONNREFUSED
    public static let connectionRefused = Errno(rawValue: ECONNREFUSED)
    /// EAFNOSUPPORT
    public static let familyNotSupported = Errno(rawValue: EAFNOSUPPORT)
    /// ENODEV
    public static let noDevice = Errno(rawValue: ENODEV)
    /// ENOTSUP
    public static let notSupported = Errno(rawValue: ENOTSUP)
    /// ELIBBAD
    public static let badLibrary = Errno(rawValue: ELIBBAD)
    /// ECANCELED
    public static let canceled = Errno(rawValue: ECANCELED)
    /// EINPROGRESS
    public static let inProgress = Errno(rawValue: EINPROGRESS)
    /// ESPIPE
    public static let illegalSeek = Errno(rawValue: ESPIPE)
    /// ENXIO
    public static let noDeviceOrAddress = Errno(rawValue: ENXIO)
    /// EMLINK
    public static let tooManyLinks = Errno(rawValue: EMLINK)
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
