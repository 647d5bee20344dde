#if canImport(Glibc)
import Glibc
#endif
import CSys
import Foundation
import Synchronization
import TetherClient
import TetherPosix

/// Exposed ports: bytes from a host TCP client, through the relay's listener, the agent's
/// tunnel endpoint and the agent's connection to the "guest" service (here the agent runs on
/// this host as a subreaper, so the guest's 127.0.0.1 is this host's), into a sink that counts
/// them. Two hops of user-space copying (relay, agent) and three sockets in a row.
enum TunnelMeasurements {
    /// A TCP sink on 127.0.0.1 (a port the kernel picks): every connection is read to EOF on
    /// a thread of its own; `received` counts the bytes of all of them.
    final class Sink: @unchecked Sendable {
        let port: UInt16
        private let listener: CInt
        let received = Atomic<Int>(0)
        let finished = Atomic<Int>(0)

        init() throws {
            let socket = try InternetSocket.listen(.loopback4, port: 0)
            try socket.setNonBlocking(false)
            port = InternetSocket.localPort(socket.raw) ?? 0
            listener = socket.release()
            let listener = listener
            DedicatedThread.start(named: "bench-sink") { [self] in
                while true {
                    let fd = Glibc.accept(listener, nil, nil)
                    if fd < 0 { if errno == EINTR { continue } else { return } }
                    DedicatedThread.start(named: "bench-sink-reader") { [self] in
                        var buffer = [UInt8](repeating: 0, count: 1 << 20)
                        while true {
                            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                            if n > 0 { received.add(n, ordering: .relaxed); continue }
                            if n < 0 && errno == EINTR { continue }
                            break
                        }
                        _ = Glibc.close(fd)
                        finished.add(1, ordering: .releasing)
                    }
                }
            }
        }

        func close() { shutdown(listener, CInt(SHUT_RDWR)); _ = Glibc.close(listener) }
    }

    /// A blocking connection to 127.0.0.1:port.
    static func connect(port: UInt16) throws -> CInt {
        let (fd, isConnected) = try InternetSocket.connect(.loopback4, port: port).release()
        if !isConnected {
            var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&poller, 1, 10_000)
            if let error = NonBlockingConnect.result(of: fd) { throw BenchError.failed("connect 127.0.0.1:\(port): \(error)") }
        }
        try FileIO.setNonBlocking(fd, false)
        return fd
    }

    /// Writes until `bytes` are written or `stop` says so; returns what was written.
    static func send(_ fd: CInt, bytes: Int, stop: Flag? = nil) -> Int {
        let buffer = [UInt8](repeating: 0x5A, count: 256 << 10)
        var sent = 0
        while sent < bytes, stop?.value.load(ordering: .relaxed) != true {
            let n = buffer.withUnsafeBytes { write(fd, $0.baseAddress, min(bytes - sent, $0.count)) }
            if n > 0 { sent += n } else if errno != EINTR { break }
        }
        return sent
    }

    /// `bytes` from a host client to the sink through an exposed port; ns from the first byte
    /// written until the sink read the last.
    static func throughput(_ client: TetherClient, sink: Sink, bytes: Int, cost: TransferCost) async throws -> UInt64 {
        let port = try await client.ports.expose(guestPort: UInt32(sink.port), name: "bench")
        defer { Task { try? await client.ports.unexpose(guestPort: UInt32(sink.port)) } }
        let before = sink.received.load(ordering: .relaxed)
        let doneBefore = sink.finished.load(ordering: .acquiring)
        let fd = try connect(port: port.hostPort)
        let mark = try cost.mark()
        let start = Clock.monotonicNs()
        let sent = send(fd, bytes: bytes)
        shutdown(fd, CInt(SHUT_WR))
        while sink.finished.load(ordering: .acquiring) == doneBefore { usleep(200) }
        let elapsed = Clock.monotonicNs() - start
        try cost.add(since: mark)
        Glibc.close(fd)
        let got = sink.received.load(ordering: .relaxed) - before
        guard sent == bytes, got == bytes else { throw BenchError.shortRead(expected: bytes, got: got) }
        try await client.ports.unexpose(guestPort: UInt32(sink.port))
        return elapsed
    }

    /// `measure` while one tunnel streams as fast as it can: does a busy tunnel hold exec
    /// traffic back? (Each has its own connection to the agent; they share the CPUs.) Run with
    /// a plain posix_spawn too, it says what the same load does to a spawn without Tether.
    static func whileStreaming(_ client: TetherClient, sink: Sink,
                               _ measure: () async throws -> Timings) async throws -> (Timings, streamedBytes: Int) {
        let port = try await client.ports.expose(guestPort: UInt32(sink.port), name: "bench-busy")
        let fd = try connect(port: port.hostPort)
        let stop = Flag()
        let writer = Writer()
        DedicatedThread.start(named: "bench-tunnel-writer") {
            writer.sent.store(send(fd, bytes: Int.max, stop: stop), ordering: .relaxed)
            writer.done.store(true, ordering: .releasing)
        }
        // Let the stream reach its pace first.
        try await Task.sleep(nanoseconds: 200_000_000)
        let timings = try await measure()
        stop.value.store(true, ordering: .relaxed)
        while !writer.done.load(ordering: .acquiring) { usleep(1_000) }
        shutdown(fd, CInt(SHUT_WR))
        Glibc.close(fd)
        try await client.ports.unexpose(guestPort: UInt32(sink.port))
        return (timings, writer.sent.load(ordering: .relaxed))
    }

    final class Flag: Sendable { let value = Atomic<Bool>(false) }
    final class Writer: Sendable {
        let sent = Atomic<Int>(0)
        let done = Atomic<Bool>(false)
    }

    /// The same-run ceiling of the path's kind: one TCP connection over loopback, straight
    /// from a writer to the sink (what a tunnel would be with no relay and no agent).
    static func loopbackCeiling(sink: Sink, bytes: Int) throws -> UInt64 {
        let doneBefore = sink.finished.load(ordering: .acquiring)
        let fd = try connect(port: sink.port)
        let start = Clock.monotonicNs()
        _ = send(fd, bytes: bytes)
        shutdown(fd, CInt(SHUT_WR))
        while sink.finished.load(ordering: .acquiring) == doneBefore { usleep(200) }
        let elapsed = Clock.monotonicNs() - start
        Glibc.close(fd)
        return elapsed
    }
}
