import TetherPosix
import TetherProtocol

/// A request or frame the agent refuses. The router turns it into the one `error` frame the
/// protocol defines (`AgentRouter.reply(_:id:on:)`); subsystems never build error frames.
struct RequestError: Error, Equatable {
    var code: ErrorCode
    var message: String
    var errno: CInt?

    init(_ code: ErrorCode, _ message: String, errno: CInt? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    /// A payload that does not decode as the message its kind names.
    static func badPayload(_ what: String, _ error: MessageError) -> RequestError {
        RequestError(.badPayload, "\(what): \(error.description)")
    }
}

extension Message {
    /// Decodes a frame's payload as this message; a bad payload is a `badPayload` refusal
    /// naming `what` (the kind, as the client knows it).
    init(_ frame: FrameView, as what: String) throws(RequestError) {
        do { try self.init(cbor: frame.payload) } catch { throw .badPayload(what, error) }
    }
}

/// One room of the agent: the frame kinds it serves and the ids its requests live on. Exec
/// sessions are one today; files, ports and background processes come as others.
///
/// A subsystem is owned by the agent and lives on its loop thread. It answers on the link it
/// is handed (frames for its own ids only) and keeps no reference to the agent.
protocol AgentSubsystem: AnyObject {
    /// The kinds that open a request on a new id (with START) that this subsystem serves.
    var startKinds: [FrameKind] { get }
    /// A START frame of one of `startKinds`, on an id no subsystem holds.
    func start(_ frame: FrameView, on link: FramedConnection) throws(RequestError)
    /// Whether a request of this subsystem lives on `id`.
    func holds(_ id: UInt32) -> Bool
    /// A frame (without START) on an id this subsystem holds. A thrown refusal ends the
    /// request for that client: the router sends the error with END, then calls `abandon`.
    func handle(_ frame: FrameView, on link: FramedConnection) throws(RequestError)
    /// The client no longer watches `id` (after an error on it).
    func abandon(_ id: UInt32)
    /// The link is gone: nothing of this subsystem is bound to it any more.
    func linkClosed(_ link: FramedConnection)
    /// The link's queue drained after it was congested: producers that waited resume.
    func linkDrained(_ link: FramedConnection)
}
