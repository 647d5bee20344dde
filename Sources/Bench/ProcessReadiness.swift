#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TetherClient
import TetherPosix
import TetherProtocol

/// How soon `processes.start(...).waitUntilReady()` returns after the listener it waits for
/// appears (`--wait-port`; issue 18's target: p50 <= 50 ms).
///
/// The bench's agent runs on this host (`Fixture`), so the bench can open the listener itself
/// and take the time at its listen(2) exactly: it starts a process (`sleep`) that waits for a
/// port, listens on that port itself a varying 5-45 ms later (so listen falls at every phase of
/// the agent's 10 ms poll), and measures from listen(2) to `waitUntilReady` returning. The agent
/// cannot tell whose socket listens; the kernel's table is the same.
enum ProcessReadiness {
    static func listenToReady(_ client: TetherClient, count: Int) async throws -> Timings {
        var timings = Timings(reserving: count)
        for i in 0..<count {
            let port = try unusedPort()
            let name = "bench-\(i)"
            let handle = try await client.processes.start(name, ["sleep", "3600"], ExecOptions(),
                                                          ProcessOptions(ready: Readiness(ports: [port]), waitTimeout: .seconds(10)))
            // The start request is on its way and the agent polls; listen a little later.
            usleep(UInt32(5_000 + (i * 7_919) % 40_000))
            let listener = try listen(port: port)
            let listenedNs = Clock.monotonicNs()
            let info = try await handle.waitUntilReady()
            timings.add(Clock.monotonicNs() - listenedNs)
            close(listener)
            guard info.state == .ready else { throw BenchError.failed("\(name) is \(info.state), not ready") }
            try await handle.signal(SIGKILL)
            _ = try await handle.wait()
            try await handle.remove()
        }
        return timings
    }

    private static func unusedPort() throws -> UInt16 {
        let fd = try listen(port: 0)
        defer { close(fd) }
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return UInt16(bigEndian: address.sin_port)
    }

    /// A TCP listener on 127.0.0.1:port. C: socket(2), bind(2), listen(2)
    private static func listen(port: UInt16) throws -> CInt {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw BenchError.failed("socket: errno \(errno)") }
        var one: CInt = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 16) == 0 else {
            let code = errno
            close(fd)
            throw BenchError.failed("bind/listen on port \(port): errno \(code)")
        }
        return fd
    }
}
