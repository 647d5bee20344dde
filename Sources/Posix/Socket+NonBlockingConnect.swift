#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherProtocol

/// A connect(2) that does not wait: for an event loop that must keep serving while the peer
/// takes its time (a guest agent dialing the host over vsock).
public enum NonBlockingConnect {
    /// A socket that is connected (unix sockets usually are at once) or still connecting
    /// (EINPROGRESS: wait until it is writable, then ask `result(of:)`).
    public struct Progress: ~Copyable {
        public var socket: OwnedFD
        public var isConnected: Bool

        /// Hands the descriptor over.
        public consuming func release() -> (fd: CInt, isConnected: Bool) {
            let connected = isConnected
            return (socket.release(), connected)
        }
    }

    /// Starts connecting a nonblocking CLOEXEC stream socket to `vsock:` or `unix:`.
    /// C: socket(2), connect(2) with O_NONBLOCK
    public static func start(_ address: Address) throws(SocketError) -> Progress {
        let family: CInt
        var storage = sockaddr_storage()
        var length: socklen_t
        switch address {
        case .vsock(let cid, let port):
            family = AF_VSOCK
            var addr = sockaddr_vm()
            addr.svm_family = sa_family_t(AF_VSOCK)
            addr.svm_cid = cid ?? Socket.hostCID
            addr.svm_port = port
            length = socklen_t(MemoryLayout<sockaddr_vm>.size)
            withUnsafeBytes(of: &addr) { raw in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: raw) } }
        case .unix(let path):
            family = AF_UNIX
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
                throw .system(operation: "connect", address: address.description, Errno(rawValue: ENAMETOOLONG))
            }
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                raw.copyBytes(from: bytes)
                raw[bytes.count] = 0
            }
            length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
            withUnsafeBytes(of: &addr) { raw in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: raw) } }
        case .fd, .hvsock:
            throw .system(operation: "connect", address: address.description, Errno(rawValue: EAFNOSUPPORT))
        }
        let raw = socket(family, CInt(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue | SOCK_NONBLOCK.rawValue), 0)
        guard raw >= 0 else { throw .system(operation: "socket", address: address.description, .current) }
        let fd = OwnedFD(adopting: raw)
        let result = withUnsafePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd.raw, $0, length) }
        }
        if result == 0 { return Progress(socket: fd, isConnected: true) }
        let code = errno
        // EAGAIN on a unix socket means a full backlog: not pending, failed (try again later).
        if code == EINPROGRESS || code == EINTR { return Progress(socket: fd, isConnected: false) }
        throw .system(operation: "connect", address: address.description, Errno(rawValue: code))
    }

    /// After a pending connect became writable: nil when it connected, else its error.
    /// C: getsockopt(2) SO_ERROR
    public static func result(of fd: CInt) -> Errno? {
        var value: CInt = 0
        var length = socklen_t(MemoryLayout<CInt>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) != 0 { return .current }
        return value == 0 ? nil : Errno(rawValue: value)
    }
}
