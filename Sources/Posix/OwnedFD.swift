#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherProtocol

/// Owns one open descriptor and closes it exactly once, when it goes out of scope.
/// Every descriptor the project opens is CLOEXEC; a child gets exactly what dup2 gives it.
public struct OwnedFD: ~Copyable {
    public let raw: CInt

    public init(adopting raw: CInt) { self.raw = raw }

    /// Hands the descriptor over without closing it.
    public consuming func release() -> CInt {
        let fd = raw
        discard self
        return fd
    }

    deinit { _ = Glibc.close(raw) }

    /// O_NONBLOCK on or off. C: fcntl(2) F_SETFL
    public func setNonBlocking(_ on: Bool = true) throws(Errno) {
        try FileIO.setNonBlocking(raw, on)
    }
}

/// A pipe's two ends. (A tuple cannot hold ~Copyable values.)
@frozen  // so other modules can take the two ends apart (partial consumption)
public struct Pipe: ~Copyable {
    public var readEnd: OwnedFD
    public var writeEnd: OwnedFD

    /// C: pipe2(2) with O_CLOEXEC and optionally O_NONBLOCK on both ends.
    public init(nonBlocking: Bool = false) throws(Errno) {
        var fds: [CInt] = [-1, -1]
        let flags = O_CLOEXEC | (nonBlocking ? O_NONBLOCK : 0)
        _ = try negativeErrno(csys_pipe2(&fds, flags))
        readEnd = OwnedFD(adopting: fds[0])
        writeEnd = OwnedFD(adopting: fds[1])
    }
}

/// The outcome of a read on a nonblocking descriptor: EAGAIN is an outcome, not an error.
public enum ReadResult: Equatable, Sendable {
    case bytes(Int)
    case endOfFile
    case wouldBlock
}

/// The outcome of a write on a nonblocking descriptor.
public enum WriteResult: Equatable, Sendable {
    case wrote(Int)
    case wouldBlock
}

/// Reads and writes that turn errno into Swift results. EINTR is retried.
public enum FileIO {
    public static func setNonBlocking(_ fd: CInt, _ on: Bool = true) throws(Errno) {
        let flags = try retrying { fcntl(fd, F_GETFL) }
        let wanted = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        if wanted != flags { _ = try retrying { fcntl(fd, F_SETFL, wanted) } }
    }

    /// C: read(2)
    public static func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> ReadResult {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n > 0 { return .bytes(n) }
            if n == 0 { return buffer.count == 0 ? .bytes(0) : .endOfFile }
            let code = errno
            switch code {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            default: throw Errno(rawValue: code)
            }
        }
    }

    /// C: write(2)
    public static func write(_ fd: CInt, _ bytes: UnsafeRawBufferPointer) throws(Errno) -> WriteResult {
        guard bytes.count > 0 else { return .wrote(0) }
        while true {
            let n = Glibc.write(fd, bytes.baseAddress, bytes.count)
            if n >= 0 { return .wrote(n) }
            let code = errno
            switch code {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            default: throw Errno(rawValue: code)
            }
        }
    }

    /// Starts writing a file's dirty pages to its disk without waiting for it (best effort:
    /// false where the file system cannot, e.g. a pipe). A writer that does this every few MiB
    /// leaves its closing fsync(2) the last few to write, not the whole file (0.24 s for a
    /// GiB here). C: sync_file_range(2) with SYNC_FILE_RANGE_WRITE over the whole file
    @discardableResult
    public static func startWriteback(_ fd: CInt) -> Bool { csys_start_writeback(fd) == 0 }

    /// How many bytes a writer lets pass between two `startWriteback` calls.
    public static let writebackIntervalBytes = 8 << 20

    /// A writer's `startWriteback` every `writebackIntervalBytes` written, for a regular file
    /// (anything else, a pipe or a terminal, has no pages to hand over: it does nothing).
    public struct WritebackPacer: Sendable {
        private let fd: CInt
        private let isFile: Bool
        private var unflushed = 0

        public init(fd: CInt) {
            var st = stat()
            self.fd = fd
            isFile = fstat(fd, &st) == 0 && st.st_mode & S_IFMT == S_IFREG
        }

        /// `count` more bytes were written.
        public mutating func wrote(_ count: Int) {
            guard isFile else { return }
            unflushed += count
            guard unflushed >= FileIO.writebackIntervalBytes else { return }
            FileIO.startWriteback(fd)
            unflushed = 0
        }
    }

    /// Writes everything to a blocking descriptor (small control writes, files, tests).
    public static func writeAll(_ fd: CInt, _ bytes: UnsafeRawBufferPointer) throws(Errno) {
        var offset = 0
        while offset < bytes.count {
            let n = try retrying { Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
            offset += n
        }
    }

    public static func writeAll(_ fd: CInt, _ bytes: [UInt8]) throws(Errno) {
        try bytes.withBytes { (raw) throws(Errno) in try writeAll(fd, raw) }
    }

    /// Reads a whole small file (procfs, /etc/passwd), at most `limit` bytes.
    public static func readFile(_ path: String, limit: Int = 16 << 20) throws(Errno) -> [UInt8] {
        let fd = try retrying { open(path, O_RDONLY | O_CLOEXEC) }
        let owned = OwnedFD(adopting: fd)
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while result.count < limit {
            let n = try chunk.withMutableBytes { (raw) throws(Errno) -> Int in
                try retrying { Glibc.read(owned.raw, raw.baseAddress, raw.count) }
            }
            if n == 0 { break }
            result += chunk[0..<n]
        }
        return result
    }
}

extension Array where Element == UInt8 {
    /// `withUnsafeMutableBytes` that keeps a typed error.
    @inlinable
    public mutating func withMutableBytes<R, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = withUnsafeMutableBytes { raw in Result { () throws(E) -> R in try body(raw) } }
        return try result.get()
    }
}
