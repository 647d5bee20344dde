#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

extension NetworkMode {
    /// Printed (and kept in state.json) whenever a sandbox shares the host's network.
    public static let hostWarning = "--network host: the sandbox shares the host's network stack (it reaches the host's 127.0.0.1 services, and its ports are the host's)"
}

/// The supervisor's side of the sandbox's network: recorded in state.json, pasta watched while
/// the sandbox runs and ended with it.
extension Supervisor {
    func recordNetwork() {
        state.network = config.network
        state.allowNet = config.allowNet
        if let egress {
            state.egress = SandboxState.EgressState(component: "pasta", pid: egress.pastaPid, guestAddress: EgressNetwork.guestAddress,
                                                    gateway: EgressNetwork.gateway, nameserver: EgressNetwork.nameserver)
            if egress.loopbackOpen {
                state.warnings.append("--allow-net opens the host's loopback: the guest reaches the host's 127.0.0.1 services at \(EgressNetwork.gateway)")
            }
        }
        state.save(to: paths.state)
    }

    /// pasta ended while the sandbox runs (crashed, or killed): the sandbox goes on without
    /// outbound network, and says so in state.json and supervisor.log. It is not restarted: its
    /// interface in the namespace is gone with it, and a new one could not take its place
    /// unnoticed by connections the guest holds.
    func networkComponentEnded() {
        guard let egress else { return }
        let how = egress.reap()
        state.egress?.ended = how
        state.egress?.pid = nil
        let warning = "the egress network (pasta) \(how); the sandbox has no outbound network until it is booted again (see \(egress.logPath))"
        state.warnings.append(warning)
        state.save(to: paths.state)
        Supervisor.log(warning)
    }

    func stopNetwork() {
        egress?.stop()
        if state.egress?.ended == nil { state.egress?.pid = nil }
    }
}
