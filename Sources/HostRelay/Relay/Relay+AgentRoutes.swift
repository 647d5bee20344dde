import TetherPosix
import TetherProtocol

// The agent side's routing: what the agent channel reports. Frames on session ids and the
// agent's loss go to the exec sessions (the one subsystem today); the rest is the router's.
extension Relay: AgentChannelDelegate {
    func agentReady(_ hello: Hello, first: Bool) {
        if first {
            // Before the seccomp filter goes on with the listener: saved ports listen again.
            ports.restore()
            startListening()
        }
        exec.requestAdoptionList()
    }

    func agentSessionFrame(_ view: FrameView) { exec.agentFrame(view) }

    func agentFailed(_ error: RelayError) { fail(error) }

    func agentPonged(_ client: ClientLink, nonce: UInt64) { clients.send(client, id: 0, Pong(nonce: nonce)) }

    func agentBackpressure(_ on: Bool) { clients.setAgentBackpressure(on) }

    func agentUnresponsive(_ message: String) {
        for client in clients.all.values { clients.refuse(client, id: 0, RelayRefusal(.agentUnresponsive, message)) }
    }

    /// Every session on the lost connection ends with `agentGone`, and so do waiting pings.
    func agentLost(message: String, waiting: [ClientLink]) {
        exec.agentLost(message: message)
        for client in waiting { clients.refuse(client, id: 0, RelayRefusal(.agentGone, message)) }
    }
}
