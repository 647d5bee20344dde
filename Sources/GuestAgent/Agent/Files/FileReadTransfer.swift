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
    /// The open file: closed by `fd = nil` at the end, or when this goes.
    private var fd: OwnedFD?
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
        self.fd = OwnedFD(adopting: fd)
        self.offset = offset
        self.remaining = length
        self.onEnd = onEnd
    }

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

    func abort() { fd = nil }

    /// Sends what the window and the link allow; the end once the bytes are out.
    func pump() {
        guard let raw = fd?.raw else { return }
        while remaining > 0 && window > 0 && !link.congested {
            let limit = Int(min(UInt64(min(window, Frame.maxDataPayloadBytes)), remaining))
            let n: Int
            switch sendFileChunk(from: raw, at: offset, limit: limit, id: id, on: link, hashing: &hasher) {
            case .success(let count): n = count
            case .failure(let errno):
                link.queued()
                return end(failure: FileFailure(op: "read", path: path, errno: errno))
            }
            if n == 0 { remaining = 0; break }   // the file became shorter: what was there is sent
            offset += UInt64(n)
            remaining -= UInt64(n)
            window -= n
            sent += UInt64(n)
        }
        link.queued()
        if remaining == 0 {
            fd = nil
            link.send(FsDone(bytes: sent, sha256: hasher.finish()), id: id, flags: .end)
            onEnd()
        }
    }

    private func end(failure: FileFailure) {
        fd = nil
        sendFailure(failure, id: id, on: link)
        onEnd()
    }
}
