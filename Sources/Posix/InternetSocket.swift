#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A numeric IPv4 or IPv6 address (no names: nothing here resolves).
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(UInt8, UInt8, UInt8, UInt8)
    /// 16 bytes in network order.
    case v6([UInt8])

    public static let loopback4 = IPAddress.v4(127, 0, 0, 1)
    public static let loopback6 = IPAddress.v6([UInt8](repeating: 0, count: 15) + [1])

    /// Parses dotted IPv4 or textual IPv6 (brackets allowed). C: inet_pton(3)
    public init?(parsing text: String) {
        var body = text
        if body.hasPrefix("["), body.hasSuffix("]") { body = String(body.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, body, &v4) == 1 {
            let bytes = withUnsafeBytes(of: v4.s_addr) { Array($0) }
            self = .v4(bytes[0], bytes[1], bytes[2], bytes[3])
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, body, &v6) == 1 {
            self = .v6(withUnsafeBytes(of: v6) { Array($0) })
            return
        }
        return nil
    }

    public var family: CInt { if case .v4 = self { AF_INET } else { AF_INET6 } }

    /// Text as inet_ntop(3) writes it (`127.0.0.1`, `::1`).
    public var description: String {
        switch self {
        case .v4(let a, let b, let c, let d):
            return "\(a).\(b).\(c).\(d)"
        case .v6(let bytes):
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            let ok = bytes.withUnsafeBytes { inet_ntop(AF_INET6, $0.baseAddress, &text, socklen_t(text.count)) != nil }
            return ok ? String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        }
    }

    /// `127.0.0.1:80` or `[::1]:80`.
    public func endpoint(port: UInt16) -> String {
        if case .v6 = self { return "[\(description)]:\(port)" }
        return "\(description):\(port)"
    }

    /// A sockaddr_in or sockaddr_in6 in a sockaddr_storage, and its length.
    func socketAddress(port: UInt16) -> sockaddr_storage {
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { raw in
            switch self {
            case .v4(let a, let b, let c, let d):
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_port = port.bigEndian
                withUnsafeMutableBytes(of: &address.sin_addr) { $0.copyBytes(from: [a, b, c, d]) }
                withUnsafeBytes(of: address) { raw.copyMemory(from: $0) }
            case .v6(let bytes):
                var address = sockaddr_in6()
                address.sin6_family = sa_family_t(AF_INET6)
                address.sin6_port = port.bigEndian
                withUnsafeMutableBytes(of: &address.sin6_addr) { $0.copyBytes(from: bytes.prefix(16)) }
                withUnsafeBytes(of: address) { raw.copyMemory(from: $0) }
            }
        }
        return storage
    }

    var socketAddressLength: socklen_t {
        socklen_t(family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
    }
}

/// TCP sockets over IPv4 and IPv6: what exposed ports need on the host (listen) and in the
/// guest (connect). Every socket is CLOEXEC and nonblocking.
public enum InternetSocket {
    /// A listening TCP socket on `address:port` (port 0: the kernel picks one). SO_REUSEADDR,
    /// so a relay that restarts binds its ports again while old connections linger in
    /// TIME_WAIT; an IPv6 socket is v6-only, so `::1` and `127.0.0.1` are separate.
    /// C: socket(2), setsockopt(2), bind(2), listen(2)
    public static func listen(_ address: IPAddress, port: UInt16, backlog: CInt = 128) throws(SocketError) -> OwnedFD {
        let where_ = address.endpoint(port: port)
        let fd = try open(address, where_)
        var on: CInt = 1
        _ = setsockopt(fd.raw, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<CInt>.size))
        if address.family == AF_INET6 { _ = setsockopt(fd.raw, CInt(IPPROTO_IPV6), IPV6_V6ONLY, &on, socklen_t(MemoryLayout<CInt>.size)) }
        var storage = address.socketAddress(port: port)
        let bound = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd.raw, $0, address.socketAddressLength) }
        }
        guard bound == 0 else { throw .system(operation: "bind", address: where_, .current) }
        guard Glibc.listen(fd.raw, backlog) == 0 else { throw .system(operation: "listen", address: where_, .current) }
        return fd
    }

    /// Starts connecting to `address:port`; `isConnected` false means EINPROGRESS (wait until
    /// writable, then `NonBlockingConnect.result(of:)`). C: socket(2), connect(2)
    public static func connect(_ address: IPAddress, port: UInt16) throws(SocketError) -> NonBlockingConnect.Progress {
        let where_ = address.endpoint(port: port)
        let fd = try open(address, where_)
        var storage = address.socketAddress(port: port)
        let result = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd.raw, $0, address.socketAddressLength) }
        }
        if result == 0 { return NonBlockingConnect.Progress(socket: fd, isConnected: true) }
        let code = errno
        if code == EINPROGRESS || code == EINTR { return NonBlockingConnect.Progress(socket: fd, isConnected: false) }
        throw .system(operation: "connect", address: where_, Errno(rawValue: code))
    }

    /// The port a socket is bound to. C: getsockname(2)
    public static func localPort(_ fd: CInt) -> UInt16? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard ok == 0 else { return nil }
        return withUnsafeBytes(of: storage) { raw -> UInt16 in
            // sin_port and sin6_port sit at the same offset, right after the family.
            let high = UInt16(raw[2]), low = UInt16(raw[3])
            return high << 8 | low
        }
    }

    private static func open(_ address: IPAddress, _ where_: String) throws(SocketError) -> OwnedFD {
        let raw = socket(address.family, CInt(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue | SOCK_NONBLOCK.rawValue), 0)
        guard raw >= 0 else { throw .system(operation: "socket", address: where_, .current) }
        return OwnedFD(adopting: raw)
    }
}
