#if canImport(Glibc)
import Glibc
#endif
import CSys
import Testing
import TetherProtocol
@testable import TetherAgent

/// The pieces of a named process the agent keeps without any I/O: the log ring with absolute
/// offsets and stream tags, the line splitter, the regcomp(3) patterns and the HTTP status line.
@Suite struct ProcessLogTests {
    /// Everything from `offset` to the end, as (stream, text) runs.
    func read(_ log: ProcessLog, from offset: UInt64, limit: Int = 1 << 20) -> [(FrameKind, String)] {
        var runs: [(FrameKind, String)] = []
        var position = offset
        while position < log.end {
            let n = log.withRun(at: position, limit: limit) { kind, bytes in
                runs.append((kind, String(decoding: bytes, as: UTF8.self)))
                return bytes.count
            }
            position += UInt64(n)
        }
        return runs
    }

    func append(_ log: inout ProcessLog, _ kind: FrameKind, _ text: String) {
        Array(text.utf8).withUnsafeBytes { log.append(kind: kind, $0) }
    }

    @Test func offsetsCountEveryByteAndRunsKeepTheirStream() {
        var log = ProcessLog(capacity: 1024)
        append(&log, .stdout, "out1 ")
        append(&log, .stdout, "out2 ")
        append(&log, .stderr, "err ")
        append(&log, .stdout, "out3")
        #expect(log.start == 0 && log.end == 18)
        let runs = read(log, from: 0)
        #expect(runs.map(\.0) == [.stdout, .stderr, .stdout])
        #expect(runs.map(\.1) == ["out1 out2 ", "err ", "out3"])
        // From the middle of a run: the rest of it, tagged with its stream.
        #expect(read(log, from: 11).map(\.1) == ["rr ", "out3"])
        #expect(read(log, from: 11).first?.0 == .stderr)
        #expect(log.tail(6) == Array("r out3".utf8))
    }

    @Test func aFullRingDropsTheOldestBytesAndCountsThem() {
        var log = ProcessLog(capacity: 10)
        append(&log, .stdout, "0123456789")
        append(&log, .stderr, "abcd")
        #expect(log.start == 4 && log.end == 14 && log.droppedBytes == 4)
        let runs = read(log, from: 4)
        #expect(runs.map(\.1) == ["456789", "abcd"], "\(runs)")
        #expect(runs.map(\.0) == [.stdout, .stderr])
        // A write larger than the ring keeps only its last bytes; every offset still counts.
        append(&log, .stdout, String(repeating: "x", count: 25) + "END")
        #expect(log.end == 42 && log.start == 32)
        // (The ring's storage ends inside this run: it comes in two pieces.)
        #expect(read(log, from: 32).map(\.1).joined() == String(repeating: "x", count: 7) + "END")
        #expect(read(log, from: 32).allSatisfy { $0.0 == .stdout })
    }

    /// The ring wraps around its storage: a run is handed out in at most two pieces, and a
    /// reader that resumes at the offset after its last byte gets each byte exactly once.
    @Test func readersResumingAtTheirOffsetSeeEveryByteOnce() {
        var log = ProcessLog(capacity: 64)
        var written: [UInt8] = []
        var seen: [UInt8] = []
        var next: UInt64 = 0
        for i in 0..<500 {
            let text = "line \(i)\n"
            append(&log, i % 3 == 0 ? .stderr : .stdout, text)
            written += Array(text.utf8)
            if i % 2 == 0 {
                while next < log.end {
                    next += UInt64(log.withRun(at: next, limit: 7) { _, bytes in
                        seen += bytes
                        return bytes.count
                    })
                }
            }
        }
        #expect(seen == Array(written.prefix(seen.count)))
        #expect(seen.count >= written.count - 64)
    }

    /// The storage starts small and grows with the output; what it held before survives each growth.
    @Test func theRingGrowsAsOutputComesUpToItsCapacity() {
        var log = ProcessLog(capacity: 100_000)
        var written: [UInt8] = []
        for i in 0..<20_000 {
            let text = "\(i) "
            append(&log, i % 5 == 0 ? .stderr : .stdout, text)
            written += Array(text.utf8)
        }
        #expect(log.end == UInt64(written.count) && written.count > 100_000)
        #expect(log.start == UInt64(written.count - 100_000))
        let held = read(log, from: log.start).map(\.1).joined()
        #expect(held == String(decoding: written.suffix(100_000), as: UTF8.self))
    }

    @Test func streamChangesAreBoundedByDroppingOldBytes() {
        var log = ProcessLog(capacity: ProcessLog.maxMarkers * 4)
        for i in 0..<(ProcessLog.maxMarkers + 10) { append(&log, i % 2 == 0 ? .stdout : .stderr, "x") }
        #expect(log.start == 10, "markers beyond the bound drop the bytes they mark")
        #expect(read(log, from: log.start, limit: 1).count == ProcessLog.maxMarkers)
    }

    @Test func linesSplitAcrossWritesAreMatchedWhole() throws {
        let pattern = try LogPattern("server ready on [0-9]+$")
        var splitter = LineSplitter()
        var matched: [String] = []
        for piece in ["booting\nserver rea", "dy on 80", "80\r\nnext", " line\n"] {
            Array(piece.utf8).withUnsafeBytes { raw in
                splitter.feed(raw) { line in if pattern.matches(line) { matched.append(String(decoding: line, as: UTF8.self)) } }
            }
        }
        #expect(matched == ["server ready on 8080"])
        var last: [String] = []
        Array("no newline at the end".utf8).withUnsafeBytes { raw in splitter.feed(raw) { _ in Issue.record("not a line yet") } }
        splitter.finish { last.append(String(decoding: $0, as: UTF8.self)) }
        #expect(last == ["no newline at the end"])
    }

    @Test func aBadExpressionIsRefusedWithRegerrorsWords() {
        #expect(throws: RequestError.self) { _ = try LogPattern("unclosed [bracket") }
        do { _ = try LogPattern("(") } catch {
            #expect(error.code == .badPayload)
            #expect(error.message.contains("'('"))
        }
    }

    @Test func httpStatusLines() {
        #expect(HTTPCheck.status(Array("HTTP/1.0 200 OK\r\n".utf8)) == 200)
        #expect(HTTPCheck.status(Array("HTTP/1.1 302 Found\r\nLocation: /x\r\n".utf8)) == 302)
        #expect(HTTPCheck.status(Array("HTTP/1.1 404".utf8)) == nil, "not a whole line yet")
        #expect(HTTPCheck.status(Array("SSH-2.0-OpenSSH\r\n".utf8)) == 0, "not HTTP: not ready")
    }

    /// A listener this test opens (IPv4 loopback, then IPv6 any) is seen by sock_diag and by the
    /// /proc tables alike, and is gone from both once closed.
    @Test func listeningPortsAreSeenThroughSockDiagAndProc() throws {
        for family in [AF_INET, AF_INET6] {
            let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
            try #require(fd >= 0)
            var port: UInt16 = 0
            if family == AF_INET {
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
                var length = socklen_t(MemoryLayout<sockaddr_in>.size)
                _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
                _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
                port = UInt16(bigEndian: address.sin_port)
            } else {
                var address = sockaddr_in6()
                address.sin6_family = sa_family_t(AF_INET6)
                var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
                guard withUnsafeMutablePointer(to: &address, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }) == 0 else {
                    close(fd)
                    continue   // no IPv6 on this host
                }
                _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
                port = UInt16(bigEndian: address.sin6_port)
            }
            #expect(notListening(port), "bound is not listening")
            #expect(listen(fd, 1) == 0)
            #expect(csys_tcp_port_listening(port) == 1, "sock_diag, family \(family)")
            #expect(ReadinessProbes.isListeningInProcTables(port: port), "/proc/net, family \(family)")
            #expect(ReadinessProbes.isListening(port: port))
            close(fd)
            #expect(notListening(port), "closed is not listening, family \(family)")
        }
    }

    /// Whether neither sock_diag nor /proc/net shows a listener on `port`. The port is free for
    /// any socket of this test process (tests run in parallel, and several listen on ports the
    /// kernel picks), so a listener seen is looked at again before it counts: a port the kernel
    /// hands out again at once is in use by someone else only for as long as that test runs.
    func notListening(_ port: UInt16) -> Bool {
        for _ in 0..<50 {
            if csys_tcp_port_listening(port) == 0 && !ReadinessProbes.isListeningInProcTables(port: port) { return true }
            usleep(20_000)
        }
        return false
    }
}
