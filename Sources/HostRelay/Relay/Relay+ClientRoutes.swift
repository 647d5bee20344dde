import TetherPosix
import TetherProtocol

// The client side's routing: one dispatch table from a frame's channel and kind to its
// handler. Handlers throw a `RelayRefusal`; `clientFrame` turns it into the `error` frame.
extension Relay: ClientLinksDelegate {
    typealias ClientHandler = (FrameView, ClientLink) throws(RelayRefusal) -> Void

    func clientFrame(_ view: FrameView, from client: ClientLink) {
        let header = view.header
        do throws(RelayRefusal) {
            try route(header, from: client)(view, client)
        } catch {
            clients.refuse(client, id: header.id, error)
        }
    }

    /// The dispatch table of the client side.
    private func route(_ header: FrameHeader, from client: ClientLink) -> ClientHandler {
        guard client.hello != nil || header.kind == .hello else { return refuseBeforeHello }
        if header.id == 0 {
            switch header.kind {
            case .hello: return clientHello
            case .ping: return clientPing
            case .pong, .error: return { _, _ in }  // answers, asking for nothing
            case .shutdown: return forwardShutdown
            default: return { view, _ throws(RelayRefusal) in
                throw RelayRefusal(.unknownKind, "\(view.header.kind) is not a control-channel kind")
            }
            }
        }
        guard header.flags.contains(.start) else { return exec.sessionFrame }
        guard client.sessions[header.id] == nil else { return refuseStartOnIDInUse }
        switch header.kind {
        case .listSessions: return exec.listSessions
        case .attach: return exec.attach
        case .logs: return exec.startLogs
        case .signalSession: return exec.signalSession
        case .exposePort: return ports.expose
        case .unexposePort: return ports.unexpose
        case .listPorts: return ports.list
        case let kind where kind.isSessionRequest: return { view, _ throws(RelayRefusal) in
            throw RelayRefusal(.unknownKind, "\(view.header.kind) cannot start a session")
        }
        default: return exec.startForwarded
        }
    }

    /// A frame from a client that has not said hello: nothing runs before the client said who
    /// it is and which protocol version it speaks. A request gets `helloRequired` (with END on
    /// its own id); the connection stays open, so a hello sent next still works.
    private func refuseBeforeHello(_ view: FrameView, from client: ClientLink) throws(RelayRefusal) {
        let header = view.header
        if header.id == 0 {
            // A pong or an error answers something and asks for nothing.
            guard header.kind != .pong && header.kind != .error else { return }
            throw RelayRefusal(.helloRequired, "\(header.kind) before hello: send hello first")
        } else if header.flags.contains(.start) {
            throw RelayRefusal(.helloRequired, "\(header.kind) before hello: send hello first; nothing was started")
        }
        // A frame for a session is for no session: none can be open before hello.
    }

    /// Not on the session's own id: an END there would end the session in use.
    private func refuseStartOnIDInUse(_ view: FrameView, from client: ClientLink) throws(RelayRefusal) {
        let header = view.header
        throw RelayRefusal(.sessionInUse, "session id \(header.id) is still in use; its START (\(header.kind)) was ignored").onControl
    }

    // MARK: the control channel

    private func clientHello(_ view: FrameView, from client: ClientLink) throws(RelayRefusal) {
        let hello: Hello
        do { hello = try Hello(cbor: view.payload) } catch {
            throw RelayRefusal(.badPayload, "hello: \(error.description)")
        }
        guard hello.version >= 1 else {
            clients.refuse(client, id: 0, RelayRefusal(.unsupported, "this relay speaks protocol version \(protocolVersion)"))
            clients.flush(client)
            clients.close(client, reason: "protocol version \(hello.version)")
            return
        }
        client.hello = hello
    }

    private func clientPing(_ view: FrameView, from client: ClientLink) throws(RelayRefusal) {
        guard let ping = try? Ping(cbor: view.payload) else { throw RelayRefusal(.badPayload, "ping is not {nonce}") }
        try agent.forwardPing(ping, from: client)
    }

    /// Power the sandbox off: the agent's business (`tether stop`).
    private func forwardShutdown(_ view: FrameView, from client: ClientLink) throws(RelayRefusal) {
        guard agent.isReady else { throw RelayRefusal(.agentNotReady, "the relay is not connected to its agent") }
        agent.forward(view.encoded, id: 0)
    }

    // MARK: clients going away

    func clientClosed(_ client: ClientLink, reason: String) {
        for session in client.sessions.values { exec.clientLeft(session, reason: reason) }
    }
}
