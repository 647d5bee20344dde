#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherProtocol

/// A nonblocking stream socket that carries frames: bytes read land in `decoder`, frames to
/// send are appended to `encoder` and leave with `flush()`.
///
/// Owns the descriptor: closed by `close()` or on deinit. Touched only by the thread that runs
/// the event loop watching it (the caller unwatches it before closing).
public final class FrameSocket {
    /// The descriptor, or -1 once closed.
    public private(set) var fd: CInt
    public var decoder = FrameDecoder()
    public var encoder = FrameEncoder()

    /// Takes ownership of `fd` and makes it nonblocking.
    public init(adopting fd: consuming OwnedFD) throws(Errno) {
        try fd.setNonBlocking()
        self.fd = fd.release()
    }

    deinit { close() }

    public var isClosed: Bool { fd < 0 }

    public func close() {
        guard fd >= 0 else { return }
        _ = Glibc.close(fd)
        fd = -1
    }

    /// What one `read` call saw.
    public struct ReadOutcome: Equatable, Sendable {
        public var bytes: Int
        /// The peer closed its side (or the read failed, see `failure`).
        public var closed: Bool
        public var failure: Errno?
    }

    /// Reads what is available into the decoder, `chunk` bytes per read(2), until EAGAIN or
    /// until `limit` bytes were read (so one busy peer cannot starve the others).
    public func read(chunk: Int = 64 << 10, limit: Int = 1 << 20) -> ReadOutcome {
        var outcome = ReadOutcome(bytes: 0, closed: false, failure: nil)
        guard fd >= 0 else {
            outcome.closed = true
            return outcome
        }
        let fd = self.fd
        while outcome.bytes < limit {
            var failure: Errno?
            let n = decoder.readInto(capacity: chunk) { buffer in
                do throws(Errno) {
                    switch try FileIO.read(fd, into: buffer) {
                    case .bytes(let n): return n
                    case .endOfFile: return 0
                    case .wouldBlock: return -1
                    }
                } catch {
                    failure = error
                    return -1
                }
            }
            if n > 0 {
                outcome.bytes += n
                if n < chunk { break }  // a short read: the socket is (almost surely) empty
                continue
            }
            if n == 0 || failure != nil {
                // EOF, or an error (ECONNRESET, EIO): either way the peer is gone.
                outcome.closed = true
                outcome.failure = failure
            }
            break
        }
        return outcome
    }

    /// Writes pending bytes until they are gone or the socket is full. Returns true when
    /// nothing is left to write. Throws on a write error (EPIPE, ECONNRESET: the peer is gone).
    public func flush() throws(Errno) -> Bool {
        guard fd >= 0 else { throw Errno(rawValue: EBADF) }
        while !encoder.isEmpty {
            let result: Result<WriteResult, Errno> = encoder.withPendingBytes { raw in
                Result { () throws(Errno) -> WriteResult in try FileIO.write(fd, raw) }
            }
            switch try result.get() {
            case .wrote(let n):
                encoder.consume(n)
            case .wouldBlock:
                return false
            }
        }
        encoder.releaseStorageIfIdle()
        return true
    }
}
