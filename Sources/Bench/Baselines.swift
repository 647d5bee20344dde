#if canImport(Glibc)
import Glibc
#endif
import CSys
import Foundation
import TetherPosix

/// What the kernel itself can do on this machine, measured in the same run as Tether so that
/// the ratios hold on a noisy machine.
enum Baselines {
    /// posix_spawn(3) + waitpid(2) of /bin/true, `count` times.
    static func spawnTrue(count: Int) throws -> Timings {
        var timings = Timings(reserving: count)
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { free(argv[0]) }
        let envp: [UnsafeMutablePointer<CChar>?] = [nil]
        for _ in 0..<count {
            let start = Clock.monotonicNs()
            var pid: pid_t = 0
            let rc = posix_spawn(&pid, "/bin/true", nil, nil, argv, envp)
            guard rc == 0 else { throw Errno(rawValue: rc) }
            var status: CInt = 0
            _ = try retrying { waitpid(pid, &status, 0) }
            timings.add(Clock.monotonicNs() - start)
        }
        return timings
    }

    /// A spawned `head -c BYTES /dev/zero` read through a pipe: the ceiling for a child's
    /// stdout on this machine. Returns the elapsed ns from spawn to EOF.
    static func pipeThroughput(bytes: Int, readSize: Int = 256 << 10) throws -> UInt64 {
        try spawnedStream(["/usr/bin/head", "-c", String(bytes), "/dev/zero"], expected: bytes, readSize: readSize)
    }

    /// `head -c BYTES /dev/zero` through a pipe into a new file at `path`, fsynced: the
    /// ceiling for a copy into the guest (what arrives must land on its disk). The file is
    /// removed afterwards.
    static func fileWriteThroughput(bytes: Int, path: String) throws -> UInt64 {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw BenchError.failed("open \(path): \(Errno.current)") }
        let file = OwnedFD(adopting: fd)
        defer { unlink(path) }
        return try spawnedStream(["/usr/bin/head", "-c", String(bytes), "/dev/zero"], expected: bytes, readSize: 1 << 20, into: file.raw)
    }

    /// `cat PATH` (a file of `bytes` bytes in the page cache) read through a pipe: the ceiling
    /// for a copy out of the guest.
    static func fileReadThroughput(path: String, bytes: Int) throws -> UInt64 {
        try spawnedStream(["/bin/cat", path], expected: bytes, readSize: 1 << 20)
    }

    /// Runs `command` with its stdout on a pipe and reads it to EOF, writing what it reads into
    /// `file` (then fsync) when there is one (it stays the caller's). Elapsed ns from the spawn to the end.
    private static func spawnedStream(_ command: [String], expected bytes: Int, readSize: Int, into file: CInt? = nil) throws -> UInt64 {
        let pipe = try TetherPosix.Pipe()
        let readEnd = pipe.readEnd
        let argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let envp: [UnsafeMutablePointer<CChar>?] = [nil]
        let start = Clock.monotonicNs()
        var pid: pid_t = 0
        do {
            // The write end is closed when this scope ends, so the read sees EOF when the child exits.
            let writeEnd = pipe.writeEnd
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_adddup2(&actions, writeEnd.raw, 1)
            let rc = posix_spawn(&pid, command[0], &actions, nil, argv, envp)
            guard rc == 0 else { throw Errno(rawValue: rc) }
        }
        var total = 0
        var buffer = [UInt8](repeating: 0, count: readSize)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(readEnd.raw, $0.baseAddress, $0.count) }
            if n > 0 {
                total += n
                if let file { try buffer.withUnsafeBytes { try FileIO.writeAll(file, UnsafeRawBufferPointer(rebasing: $0[0..<n])) } }
                continue
            }
            if n < 0 && errno == EINTR { continue }
            break
        }
        if let file, fsync(file) != 0 { throw BenchError.failed("fsync: \(Errno.current)") }
        let elapsed = Clock.monotonicNs() - start
        var status: CInt = 0
        _ = try retrying { waitpid(pid, &status, 0) }
        guard total == bytes else { throw BenchError.shortRead(expected: bytes, got: total) }
        return elapsed
    }

    /// An AF_UNIX stream socketpair, one thread writing `bytes`, this one reading: the ceiling
    /// for bytes crossing a unix socket (what the relay and client use).
    static func socketThroughput(bytes: Int, chunk: Int = 256 << 10) throws -> UInt64 {
        let pair = try Socket.pair()
        let writerFD = pair.second.raw
        let reader = pair.first.raw
        let start = Clock.monotonicNs()
        DedicatedThread.start(named: "bench-writer") {
            var buffer = [UInt8](repeating: 0x5A, count: chunk)
            var left = bytes
            while left > 0 {
                let n = buffer.withUnsafeMutableBytes { Glibc.write(writerFD, $0.baseAddress, min(left, $0.count)) }
                if n > 0 { left -= n } else if errno != EINTR { break }
            }
            shutdown(writerFD, CInt(SHUT_WR))
        }
        var total = 0
        var buffer = [UInt8](repeating: 0, count: chunk)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(reader, $0.baseAddress, $0.count) }
            if n > 0 { total += n; continue }
            if n < 0 && errno == EINTR { continue }
            break
        }
        let elapsed = Clock.monotonicNs() - start
        _ = pair
        guard total == bytes else { throw BenchError.shortRead(expected: bytes, got: total) }
        return elapsed
    }
}

extension Baselines {
    /// 64 bytes each way over an AF_UNIX stream socketpair, a thread echoing: the floor under
    /// any ping over a unix socket (two context switches and two copies each way).
    ///
    /// `cpus`: the CPUs the timing thread and the echoing thread are pinned to for the
    /// measurement. Left to the scheduler, the two threads of one process share a vCPU in some
    /// runs and not in others, and on this kind of VM the round trip is then 8 or 24 us: a
    /// wake-up of another, idle vCPU is an exit to the hypervisor.
    static func unixRoundTrip(count: Int, size: Int = 64, cpus: (timing: Int, echo: Int)) throws -> Timings {
        let pair = try Socket.pair()
        let echoFD = pair.second.raw
        let fd = pair.first.raw
        let total = count + min(100, count)
        var original = [UInt8](repeating: 0, count: 128)
        let got = csys_thread_affinity_get(&original, original.count)
        guard got == 0 else { throw Errno(rawValue: -got) }
        defer { _ = csys_thread_affinity_set(original, original.count) }
        try pinCallingThread(to: cpus.timing)
        DedicatedThread.start(named: "bench-echo") {
            try? pinCallingThread(to: cpus.echo)
            var buffer = [UInt8](repeating: 0, count: size)
            for _ in 0..<total {
                guard readFully(echoFD, &buffer), (try? FileIO.writeAll(echoFD, buffer)) != nil else { return }
            }
        }
        var buffer = [UInt8](repeating: 0x5A, count: size)
        var timings = Timings(reserving: count)
        for i in 0..<total {
            let start = Clock.monotonicNs()
            guard (try? FileIO.writeAll(fd, buffer)) != nil, readFully(fd, &buffer) else { throw BenchError.failed("unix round trip: \(Errno.current)") }
            if i >= total - count { timings.add(Clock.monotonicNs() - start) }
        }
        _ = pair
        return timings
    }

    /// Pins the calling thread (sched_setaffinity with pid 0 means the caller's thread).
    private static func pinCallingThread(to cpu: Int) throws {
        var mask = [UInt8](repeating: 0, count: 128)
        mask[cpu / 8] |= UInt8(1 << (cpu % 8))
        let set = csys_thread_affinity_set(mask, mask.count)
        guard set == 0 else { throw Errno(rawValue: -set) }
    }

    /// Reads exactly `buffer.count` bytes (a blocking socket); false at EOF or on an error.
    private static func readFully(_ fd: CInt, _ buffer: inout [UInt8]) -> Bool {
        var got = 0
        while got < buffer.count {
            let result = buffer.withUnsafeMutableBytes { raw in
                try? FileIO.read(fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[got...]))
            }
            guard case .bytes(let n) = result else { return false }
            got += n
        }
        return true
    }
}

enum BenchError: Error, CustomStringConvertible {
    case shortRead(expected: Int, got: Int)
    case missing(String)
    case failed(String)

    var description: String {
        switch self {
        case .shortRead(let expected, let got): "expected \(expected) bytes, got \(got)"
        case .missing(let what): "missing: \(what)"
        case .failed(let what): what
        }
    }
}
