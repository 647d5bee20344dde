#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// `fsRead`: `fsInfo`, then the file's bytes as `stdout` frames within the client's window
/// (section 8: the client acks as it consumes), then `fsDone{bytes, sha256}`. The bytes are
/// read from the file straight into the link's outbound buffer, so the agent holds at most
/// the window (256 KiB) of a transfer, whatever the file's size.
///
/// Owns the open file. Lives on the loop thread; ends with its END frame or `abort()`.
final class FileReadTransfer: FileTransfer {
    private let id: UInt32
    private let link: FramedConnection
    private let path: OSString
    /// The open file (inotify descriptor), closed once by `closeFile()` (or when this goes).
    private var fd: CInt?
    private var offset: UInt64
    private var remaining: UInt64
    private var window = FlowControl.initialWindowBytes
    private var hasher = SHA256()
    private var sent: UInt64 = 0
    private let onEnd: () -> Void

    init(id: UInt32, link: FramedConnection, path: OSString, fd: CInt, offset: UInt64, length: UInt64,
         onEnd: @escaping () -> Void) {
        self.id = id
        self.link = link
        self.path = path
        self.fd = fd
        self.offset = offset
        self.remaining = length
        self.onEnd = onEnd
    }

    private func closeFile() {
        if let fd { _ = close(fd) }
        fd = nil
    }

    deinit { closeFile() }

    func handle(_ frame: FrameView) throws(RequestError) {
        switch frame.header.kind {
        case .ack:
            window += try decodeAck(frame)
            pump()
        case .kill:
            end(failure: FileFailure(.transferAborted, op: "read", path: path, "the client cancelled the read"))
        default:
            throw RequestError(.unknownKind, "kind \(frame.header.kind) is not valid on an fsRead")
        }
    }

    func linkDrained() { pump() }

    func abort() { closeFile() }

    /// Sends what the window and the link allow; the end once the bytes are out.
    func pump() {
        guard let raw = fd else { return }
        while remaining > 0 && window > 0 && !link.congested {
            let limit = Int(min(UInt64(min(window, Frame.maxDataPayloadBytes)), remaining))
            var failure: CInt = 0
            let at = offset
            let n = link.appendData(id: id, kind: .stdout, maxPayload: limit) { buffer in
                while true {
                    let n = pread(raw, buffer.baseAddress, buffer.count, off_t(at))
                    if n >= 0 {
                        if n > 0 { hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) }
                        return n
                    }
                    if errno == EINTR { continue }
                    failure = errno
                    return -1
                }
            }
            if failure != 0 {
                link.queued()
                return end(failure: FileFailure(op: "read", path: path, errno: Errno(rawValue: failure)))
            }
            if n <= 0 { remaining = 0; break }   // the file became shorter: what was there is sent
            offset += UInt64(n)
            remaining -= UInt64(n)
            window -= n
            sent += UInt64(n)
        }
        link.queued()
        if remaining == 0 {
            closeFile()
            link.send(FsDone(bytes: sent, sha256: hasher.finish()), id: id, flags: .end)
            onEnd()
        }
    }

    private func end(failure: FileFailure) {
        closeFile()
        sendFailure(failure, id: id, on: link)
        onEnd()
    }
}
