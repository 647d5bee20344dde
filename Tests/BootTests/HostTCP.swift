#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix

/// Plain blocking TCP on the host, as a browser or curl would use an exposed port. Every
/// socket gets a receive timeout, so a test that waits for bytes that never come fails
/// instead of hanging.
enum HostTCP {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func connect(_ address: IPAddress, port: UInt16) throws -> CInt {
        let progress = try InternetSocket.connect(address, port: port)
        let (fd, isConnected) = progress.release()
        if !isConnected {
            var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&poller, 1, 10_000)
            if let error = NonBlockingConnect.result(of: fd) {
                close(fd)
                throw Failure(description: "connect \(address.endpoint(port: port)): \(error)")
            }
        }
        try FileIO.setNonBlocking(fd, false)
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    static func writeAll(_ fd: CInt, _ bytes: [UInt8]) throws {
        try FileIO.writeAll(fd, bytes)
    }

    /// Everything until EOF; a reset or the timeout throws.
    static func readToEnd(_ fd: CInt) throws -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count == 0 { return result }
            if count < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "read: \(Errno.current)")
            }
            result += chunk.prefix(count)
        }
    }

    /// Connect, send, shut the writing half, read the reply to EOF.
    static func exchange(_ address: IPAddress, port: UInt16, send: [UInt8]) throws -> [UInt8] {
        let fd = try connect(address, port: port)
        defer { close(fd) }
        try writeAll(fd, send)
        shutdown(fd, CInt(SHUT_WR))
        return try readToEnd(fd)
    }

    /// A listener on a port the kernel picks (to hold a host port the way another program would).
    static func listen(_ address: IPAddress) throws -> (fd: CInt, port: UInt16) {
        let socket = try InternetSocket.listen(address, port: 0)
        let port = InternetSocket.localPort(socket.raw) ?? 0
        return (socket.release(), port)
    }
}
