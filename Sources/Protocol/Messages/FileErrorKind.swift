/// Why a files request failed (the `kind` of an `fsError`). Names follow the Cloudflare SDK's
/// where it has one. The agent maps an errno to a kind in one place (`FileFailure`); the table
/// is in docs/PROTOCOL.md. An open set on the wire, like `ErrorCode`.
public enum FileErrorKind: Hashable, Sendable, CaseIterableWire, CustomStringConvertible {
    /// ENOENT.
    case fileNotFound
    /// EEXIST.
    case fileExists
    /// EACCES, EPERM.
    case permissionDenied
    /// EISDIR, or a directory where a file was asked for.
    case isDirectory
    /// ENOTDIR.
    case notDirectory
    /// ENOTEMPTY.
    case directoryNotEmpty
    /// EFBIG, or more bytes than the caller's `limit`.
    case fileTooLarge
    /// ENOSPC, EDQUOT.
    case noSpace
    /// EROFS.
    case readOnly
    /// ENAMETOOLONG.
    case nameTooLong
    /// EXDEV.
    case crossDevice
    /// EMLINK, ELOOP.
    case tooManyLinks
    /// `ifAbsent` found the file, or the target is not what the request expects.
    case preconditionFailed
    /// The bytes written do not have the `sha256` the request named.
    case checksumMismatch
    /// The transfer was cut short (the client cancelled or went away, or sent too little).
    case transferAborted
    /// An empty path, a NUL byte in one, a bad cursor.
    case invalidPath
    /// The `user` of the request does not exist in the guest.
    case userNotFound
    /// EBUSY, ETXTBSY.
    case busy
    /// EINVAL and other refusals of an argument.
    case invalidArgument
    /// EIO.
    case ioError
    /// EMFILE, ENFILE, ENOMEM: the guest is short of a resource.
    case resourceLimit
    /// Any other errno (the errno is in the error).
    case other
    /// A kind this build does not know.
    case unrecognized(String)

    public static let known: [FileErrorKind] = [
        .fileNotFound, .fileExists, .permissionDenied, .isDirectory, .notDirectory, .directoryNotEmpty, .fileTooLarge,
        .noSpace, .readOnly, .nameTooLong, .crossDevice, .tooManyLinks, .preconditionFailed, .checksumMismatch,
        .transferAborted, .invalidPath, .userNotFound, .busy, .invalidArgument, .ioError, .resourceLimit, .other,
    ]

    public init(from decoder: any Decoder) throws { try self.init(wireNameFrom: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeWireName(to: encoder) }

    public var rawValue: String {
        switch self {
        case .fileNotFound: "fileNotFound"
        case .fileExists: "fileExists"
        case .permissionDenied: "permissionDenied"
        case .isDirectory: "isDirectory"
        case .notDirectory: "notDirectory"
        case .directoryNotEmpty: "directoryNotEmpty"
        case .fileTooLarge: "fileTooLarge"
        case .noSpace: "noSpace"
        case .readOnly: "readOnly"
        case .nameTooLong: "nameTooLong"
        case .crossDevice: "crossDevice"
        case .tooManyLinks: "tooManyLinks"
        case .preconditionFailed: "preconditionFailed"
        case .checksumMismatch: "checksumMismatch"
        case .transferAborted: "transferAborted"
        case .invalidPath: "invalidPath"
        case .userNotFound: "userNotFound"
        case .busy: "busy"
        case .invalidArgument: "invalidArgument"
        case .ioError: "ioError"
        case .resourceLimit: "resourceLimit"
        case .other: "other"
        case .unrecognized(let name): name
        }
    }
}
