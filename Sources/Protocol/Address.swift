/// Where a program listens or connects:
/// `vsock:PORT` (any CID), `vsock:CID:PORT`, `unix:PATH`, `fd:N`, and on the host
/// `hvsock:PATH:PORT` (Firecracker / Cloud Hypervisor: a unix socket that takes
/// `CONNECT <port>\n` and answers `OK <n>\n` before frames start).
public enum Address: Hashable, Sendable, CustomStringConvertible {
    /// `cid` nil means any (VMADDR_CID_ANY) when listening, the host (2) when connecting.
    case vsock(cid: UInt32?, port: UInt32)
    case unix(path: String)
    /// An already connected or listening descriptor inherited from the parent.
    case fd(Int32)
    case hvsock(path: String, port: UInt32)

    public enum ParseError: Error, Equatable, Sendable {
        case unknownScheme(String)
        case invalid(String, reason: String)
    }

    public init(parsing text: String) throws(ParseError) {
        guard let colon = text.firstIndex(of: ":") else {
            throw .invalid(text, reason: "expected SCHEME:VALUE (vsock:PORT, vsock:CID:PORT, unix:PATH, fd:N, hvsock:PATH:PORT)")
        }
        let scheme = text[..<colon]
        let rest = String(text[text.index(after: colon)...])
        switch scheme {
        case "vsock":
            let parts = rest.split(separator: ":", omittingEmptySubsequences: false)
            switch parts.count {
            case 1:
                guard let port = UInt32(parts[0]) else { throw .invalid(text, reason: "port must be a number") }
                self = .vsock(cid: nil, port: port)
            case 2:
                guard let cid = UInt32(parts[0]), let port = UInt32(parts[1]) else {
                    throw .invalid(text, reason: "CID and port must be numbers")
                }
                self = .vsock(cid: cid, port: port)
            default:
                throw .invalid(text, reason: "expected vsock:PORT or vsock:CID:PORT")
            }
        case "unix":
            guard !rest.isEmpty else { throw .invalid(text, reason: "the path is empty") }
            // sun_path holds 108 bytes including the terminating NUL.
            guard rest.utf8.count < 108 else { throw .invalid(text, reason: "the path is longer than 107 bytes, the limit of a unix socket address") }
            self = .unix(path: rest)
        case "fd":
            guard let fd = Int32(rest), fd >= 0 else { throw .invalid(text, reason: "expected a descriptor number") }
            self = .fd(fd)
        case "hvsock":
            guard let last = rest.lastIndex(of: ":"), let port = UInt32(rest[rest.index(after: last)...]),
                  !rest[..<last].isEmpty else {
                throw .invalid(text, reason: "expected hvsock:PATH:PORT")
            }
            self = .hvsock(path: String(rest[..<last]), port: port)
        default:
            throw .unknownScheme(String(scheme))
        }
    }

    public var description: String {
        switch self {
        case .vsock(nil, let port): "vsock:\(port)"
        case .vsock(let cid?, let port): "vsock:\(cid):\(port)"
        case .unix(let path): "unix:\(path)"
        case .fd(let fd): "fd:\(fd)"
        case .hvsock(let path, let port): "hvsock:\(path):\(port)"
        }
    }
}
