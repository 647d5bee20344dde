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
