#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// A files request that lives longer than one turn (a read, a write, a watch) on one id of
/// the link. Owned by `AgentFiles`; lives on the loop thread. It ends by sending its last
/// frame (END) and calling `onEnd`, or by `abort()` when its client is gone.
protocol FileTransfer: AnyObject {
    /// A frame on its id: `stdin`, `ack`, `kill`.
    func handle(_ frame: FrameView) throws(RequestError)
    /// The link drained after it was congested.
    func linkDrained()
    /// The client is gone (link closed, or the request was refused): release everything, send
    /// nothing. A write leaves the old file as it was and no temporary file.
    func abort()
}

/// Sends a failure as the request's last frame.
func sendFailure(_ failure: FileFailure, id: UInt32, on link: FramedConnection) {
    link.send(failure.frame, id: id, flags: .end)
}

/// The frames every transfer takes alike.
func decodeAck(_ frame: FrameView) throws(RequestError) -> Int {
    Int(clamping: min(try Ack(frame, as: "ack").bytes, UInt64(64 << 20)))
}

/// Up to `limit` bytes of `fd` from `offset`, read straight into the link's outbound buffer
/// as one `stdout` frame on `id` and hashed on the way: the chunk every transfer that sends a
/// file's bytes sends. Returns the bytes sent (0 at the file's end) or pread's errno.
func sendFileChunk(from fd: CInt, at offset: UInt64, limit: Int, id: UInt32, on link: FramedConnection,
                   hashing hasher: inout SHA256) -> Result<Int, Errno> {
    var failure: CInt = 0
    let n = link.appendData(id: id, kind: .stdout, maxPayload: limit) { buffer in
        while true {
            let n = pread(fd, buffer.baseAddress, buffer.count, off_t(offset))
            if n >= 0 {
                if n > 0 { hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) }
                return n
            }
            if errno == EINTR { continue }
            failure = errno
            return -1
        }
    }
    return failure != 0 ? .failure(Errno(rawValue: failure)) : .success(max(n, 0))
}
