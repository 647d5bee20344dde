#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherProtocol

extension FileErrorKind {
    /// The kind an errno stands for: the one errno-to-kind table (docs/PROTOCOL.md, "Files"),
    /// for the agent's failures and the CLI's local ones alike. Here rather than beside the
    /// enum because the protocol module knows no errno values.
    public init(errno code: CInt) {
        switch code {
        case ENOENT: self = .fileNotFound
        case EEXIST: self = .fileExists
        case EACCES, EPERM: self = .permissionDenied
        case EISDIR: self = .isDirectory
        case ENOTDIR: self = .notDirectory
        case ENOTEMPTY: self = .directoryNotEmpty
        case EFBIG: self = .fileTooLarge
        case ENOSPC, EDQUOT: self = .noSpace
        case EROFS: self = .readOnly
        case ENAMETOOLONG: self = .nameTooLong
        case EXDEV: self = .crossDevice
        case EMLINK, ELOOP: self = .tooManyLinks
        case EBUSY, ETXTBSY: self = .busy
        case EINVAL: self = .invalidArgument
        case EIO: self = .ioError
        case EMFILE, ENFILE, ENOMEM: self = .resourceLimit
        default: self = .other
        }
    }
}
