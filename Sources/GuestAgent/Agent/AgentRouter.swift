#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// The agent's one dispatch: every frame from the host goes to the control room (id 0), to
/// the subsystem that holds its id, or, with START on a new id, to the subsystem whose kind
/// it is (`routes`). Refusals come back as `RequestError` and become frames in `reply`, the
/// one place that maps errors to frames. Never traps on peer bytes: every payload is decoded
/// with typed errors.
extension Agent {
    func route(_ frame: FrameView, on link: FramedConnection) {
        let header = frame.header
        if header.id == 0 {
            control(frame, on: link)
        } else if let holder = subsystems.first(where: { $0.holds(header.id) }) {
            if header.flags.contains(.start) {
                // An error on the id itself would end (END) a request that is still running.
                reply(RequestError(.sessionInUse, "session id \(header.id) is still in use; a START needs an id that is not live"),
                      id: 0, on: link)
                return
            }
            do { try holder.handle(frame, on: link) } catch {
                reply(error, id: header.id, on: link)
                holder.abandon(header.id)
            }
        } else if header.flags.contains(.start) {
            guard let subsystem = routes[header.kind] else {
                reply(RequestError(.unknownKind, "kind \(header.kind) cannot start a session"), id: header.id, on: link)
                return
            }
            do { try subsystem.start(frame, on: link) } catch {
                reply(error, id: header.id, on: link)
            }
        }
        // Anything else is a late frame for an id that is no longer live: an ack or stdin
        // the client sent before it read `done`, or a signal racing the exit. Frames can be
        // in flight both ways, so this is normal and the frame is dropped silently.
    }

    /// The error frame for a refusal: on id 0 it ends nothing; on a request's id it ends that
    /// request for its client (END).
    func reply(_ error: RequestError, id: UInt32, on link: FramedConnection) {
        link.send(ErrorMessage(code: error.code, message: error.message, errno: error.errno), id: id, flags: id == 0 ? [] : .end)
    }

    // MARK: the control room (id 0)

    private func control(_ frame: FrameView, on link: FramedConnection) {
        do throws(RequestError) {
            switch frame.header.kind {
            case .hello:
                let hello = try Hello(frame, as: "hello")
                guard hello.version >= 1 else {
                    reply(RequestError(.unsupported, "protocol version \(hello.version) is not supported; "
                                       + "this agent speaks version \(protocolVersion)"), id: 0, on: link)
                    link.closeAfterFlush()
                    return
                }
                peerVersion = min(hello.version, protocolVersion)
            case .ping:
                link.send(Pong(nonce: try Ping(frame, as: "ping").nonce), id: 0)
            case .pong:
                break
            case .shutdown:
                shutdown(graceMs: try Shutdown(frame, as: "shutdown").graceMs, reason: "shutdown requested")
            case .error:
                if let error = try? ErrorMessage(cbor: frame.payload) {
                    Log.info("peer reported an error: \(error.code): \(error.message)")
                }
            default:
                throw RequestError(.unknownKind, "kind \(frame.header.kind) is not a control message (id 0)")
            }
        } catch {
            reply(error, id: 0, on: link)
        }
    }
}
