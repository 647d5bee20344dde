#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherProtocol

/// Why a socket could not be opened for an `Address`.
public enum SocketError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A syscall failed; `operation` names it (`connect`, `bind`, ...).
    case system(operation: String, address: String, Errno)
    /// An hvsock peer did not answer `CONNECT <port>` with `OK`.
    case handshake(address: String, reply: String)

    public var errno: Errno? {
        if case .system(_, _, let e) = self { return e }
        return nil
    }

    public var description: String {
        switch self {
        case .system(let op, let address, let e): "\(op) \(address): \(e)"
        case .handshake(let address, let reply): "\(address): the vsock proxy answered \"\(reply)\" instead of OK"
        }
    }
}

/// Opening stream sockets for `Address`es. Every socket is CLOEXEC; listeners are
/// nonblocking (accept in an event loop), connected sockets are blocking unless asked.
public enum Socket {
    /// The host's CID when connecting with `vsock:PORT` (no CID given).
    public static let hostCID: UInt32 = 2

    /// Binds and listens. `unix:` removes a stale socket file at the path first (never any
    /// other kind of file); `fd:` adopts an inherited descriptor as it is.
    public static func listen(_ address: Address, backlog: CInt = 128) throws(SocketError) -> OwnedFD {
        switch address {
        case .fd(let fd):
            return OwnedFD(adopting: fd)
        case .unix(let path):
            let fd = try open(AF_UNIX, address)
            var st = stat()
            if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK { unlink(path) }
            // Bound under a temporary name and renamed into place once it listens: between
            // bind(2) and listen(2) a connect to the path is refused (ECONNREFUSED), and a
            // peer that waits for the path to appear would see that refusal.
            // A path too long for the suffix is bound in place.
            let staging = path.utf8.count + 1 < MemoryLayout.size(ofValue: sockaddr_un().sun_path) ? path + "~" : path
            if staging != path && lstat(staging, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK { unlink(staging) }
            try withUnixAddress(staging) { (addr, len) throws(SocketError) in
                try call("bind", address) { bind(fd.raw, addr, len) }
            }
            do throws(SocketError) {
                try call("listen", address) { Glibc.listen(fd.raw, backlog) }
                try call("fcntl", address) { () throws(Errno) in try FileIO.setNonBlocking(fd.raw) }
                if staging != path {
                    // link(2), not rename(2): it never replaces what is at the path (EEXIST),
                    // so a file that is not a stale socket stays, as bind(2) would leave it.
                    if Glibc.link(staging, path) != 0 {
                        let failure = Errno.current
                        throw SocketError.system(operation: "bind", address: address.description,
                                                 failure.rawValue == EEXIST ? Errno(rawValue: EADDRINUSE) : failure)
                    }
                    unlink(staging)
                }
            } catch {
                unlink(staging)
                throw error
            }
            return fd
        case .vsock(let cid, let port):
            let fd = try open(AF_VSOCK, address)
            var addr = vsockAddress(cid: cid ?? UInt32(bitPattern: -1) /* VMADDR_CID_ANY */, port: port)
            try call("bind", address) {
                withUnsafePointer(to: &addr) { bind(fd.raw, UnsafeRawPointer($0).assumingMemoryBound(to: sockaddr.self), socklen_t(MemoryLayout<sockaddr_vm>.size)) }
            }
            try call("listen", address) { Glibc.listen(fd.raw, backlog) }
            try call("fcntl", address) { () throws(Errno) in try FileIO.setNonBlocking(fd.raw) }
            return fd
        case .hvsock:
            // The guest side of Firecracker's hybrid vsock is plain vsock.
            throw .system(operation: "listen", address: address.description, Errno(rawValue: EAFNOSUPPORT))
        }
    }

    /// Connects (blocking). `hvsock:` performs the `CONNECT <port>\n` / `OK <n>\n` exchange.
    public static func connect(_ address: Address) throws(SocketError) -> OwnedFD {
        switch address {
        case .fd(let fd):
            return OwnedFD(adopting: fd)
        case .unix(let path):
            let fd = try open(AF_UNIX, address)
            try withUnixAddress(path) { (addr, len) throws(SocketError) in
                try call("connect", address) { Glibc.connect(fd.raw, addr, len) }
            }
            return fd
        case .vsock(let cid, let port):
            let fd = try open(AF_VSOCK, address)
            var addr = vsockAddress(cid: cid ?? hostCID, port: port)
            try call("connect", address) {
                withUnsafePointer(to: &addr) { Glibc.connect(fd.raw, UnsafeRawPointer($0).assumingMemoryBound(to: sockaddr.self), socklen_t(MemoryLayout<sockaddr_vm>.size)) }
            }
            return fd
        case .hvsock(let path, let port):
            let fd = try connect(.unix(path: path))
            try hybridVsockHandshake(fd.raw, port: port, address: address)
            return fd
        }
    }

    /// Accepts one connection as a CLOEXEC socket; nil when none is pending (EAGAIN).
    public static func accept(_ listener: CInt, nonBlocking: Bool = true) throws(Errno) -> OwnedFD? {
        let flags = CInt(SOCK_CLOEXEC.rawValue) | (nonBlocking ? CInt(SOCK_NONBLOCK.rawValue) : 0)
        let fd = csys_accept4(listener, nil, nil, flags)
        if fd == -EAGAIN { return nil }
        return OwnedFD(adopting: try negativeErrno(fd))
    }

    /// A connected pair of stream sockets, CLOEXEC. C: socketpair(2)
    public static func pair() throws(Errno) -> SocketPair {
        var fds: [CInt] = [-1, -1]
        _ = try retrying { socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0, &fds) }
        return SocketPair(first: OwnedFD(adopting: fds[0]), second: OwnedFD(adopting: fds[1]))
    }

    /// Whether an inherited descriptor is a listening socket (SO_ACCEPTCONN) rather than a
    /// connected stream.
    public static func isListening(_ fd: CInt) -> Bool {
        var value: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &length) == 0 && value != 0
    }

    /// Sets SO_SNDBUF and SO_RCVBUF (best effort: the kernel caps them at net.core.*mem_max).
    public static func setBufferSizes(_ fd: CInt, bytes: CInt) {
        var value = bytes
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &value, socklen_t(MemoryLayout<CInt>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &value, socklen_t(MemoryLayout<CInt>.size))
    }

    // MARK: helpers

    private static func open(_ family: CInt, _ address: Address) throws(SocketError) -> OwnedFD {
        let fd = socket(family, CInt(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(operation: "socket", address: address.description, .current) }
        return OwnedFD(adopting: fd)
    }

    private static func call<T: FixedWidthInteger>(_ operation: String, _ address: Address, _ body: () -> T) throws(SocketError) {
        do { _ = try retrying(body) } catch { throw .system(operation: operation, address: address.description, error) }
    }

    private static func call(_ operation: String, _ address: Address, _ body: () throws(Errno) -> Void) throws(SocketError) {
        do { try body() } catch { throw .system(operation: operation, address: address.description, error) }
    }

    private static func vsockAddress(cid: UInt32, port: UInt32) -> sockaddr_vm {
        var addr = sockaddr_vm()
        addr.svm_family = sa_family_t(AF_VSOCK)
        addr.svm_cid = cid
        addr.svm_port = port
        return addr
    }

    private static func withUnixAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) throws(SocketError) -> Void) throws(SocketError) {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard bytes.count < capacity else {
            throw .system(operation: "bind", address: "unix:" + path, Errno(rawValue: ENAMETOOLONG))
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        let result: Result<Void, SocketError> = withUnsafePointer(to: &addr) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                Result { () throws(SocketError) in try body(sa, length) }
            }
        }
        try result.get()
    }

    /// Firecracker / Cloud Hypervisor hybrid vsock: write `CONNECT <port>\n`, read one line,
    /// which must start with `OK `. Reads byte by byte so no frame byte is consumed.
    private static func hybridVsockHandshake(_ fd: CInt, port: UInt32, address: Address) throws(SocketError) {
        let request = Array("CONNECT \(port)\n".utf8)
        try call("write", address) { () throws(Errno) in try FileIO.writeAll(fd, request) }
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while line.count < 64 {
            let n = Glibc.read(fd, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw .system(operation: "read", address: address.description, .current) }
            if n == 0 || byte == UInt8(ascii: "\n") { break }
            line.append(byte)
        }
        let reply = String(decoding: line, as: UTF8.self)
        guard reply.hasPrefix("OK ") else { throw .handshake(address: address.description, reply: reply) }
    }
}

/// Two connected stream sockets. (A tuple cannot hold ~Copyable values.)
@frozen  // so other modules can take the two ends apart (partial consumption)
public struct SocketPair: ~Copyable {
    public var first: OwnedFD
    public var second: OwnedFD
}
