#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import Foundation
import TetherPosix
import TetherProtocol

/// The supervisor's relay: started once the agent said hello, restarted when it dies on its own.
extension Supervisor {
    /// Starts `tether relay` between `agent.sock` and `relay.sock` and waits until it accepts
    /// clients, so `--sandbox NAME` works as soon as `boot` returns. A relay that cannot start
    /// is a warning, not a boot failure: the agent is up and reachable on `agent.sock`.
    func startRelay() {
        guard let relay = config.relayExecutable else { return }
        unlink(paths.relaySocket.path)
        var launcher = NamespaceLauncher(
            path: relay,
            arguments: [relay, "relay", "--agent", "unix:" + paths.agentSocket.path, "--listen", "unix:" + paths.relaySocket.path,
                        "--name", "tether-relay-" + config.name,
                        "--tunnel", "unix:" + paths.tunnelSocket.path, "--ports-file", paths.ports.path] + (config.logStdin == true ? ["--log-stdin"] : []),
            environment: ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" })
        launcher.namespaces = []
        launcher.newSession = false
        // A relay outliving its supervisor would hold the agent's one connection for nobody.
        launcher.parentDeathSignal = SIGTERM
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { if devNull >= 0 { close(devNull) } }
        // Our stderr is supervisor.log: the relay's messages go there too.
        launcher.descriptors = [(devNull, 0), (2, 1), (2, 2)]
        do {
            relayPid = try launcher.launch()
        } catch {
            state.warnings.append("the relay \(relay) did not start (\(error.errno)): connect to \(paths.agentSocket.path) instead")
            state.save(to: paths.state)
            return
        }
        relayFD = csys_pidfd_open(relayPid, 0)
        // The relay binds its socket once the agent answered it: connect until that works.
        let deadline = Clock.monotonicNs() + 10_000_000_000
        var listening = false
        while Clock.monotonicNs() < deadline {
            if (try? Socket.connect(.unix(path: paths.relaySocket.path))) != nil {
                listening = true
                break
            }
            if relayFD >= 0 && Handshake.wait(fds: [relayFD], timeoutMs: 20) == 0 { break }
        }
        if listening {
            state.relayPid = relayPid
        } else {
            stopRelay()
            state.warnings.append("the relay did not start serving \(paths.relaySocket.path) (see \(paths.supervisorLog.path)); connect to \(paths.agentSocket.path) instead")
        }
        state.save(to: paths.state)
    }

    /// Ends the relay (SIGTERM, then SIGKILL after a second) and reaps it: the agent serves one
    /// connection at a time, and the supervisor's shutdown request needs it.
    func stopRelay() {
        guard relayPid > 0 else { return }
        kill(relayPid, SIGTERM)
        if relayFD < 0 || Handshake.wait(fds: [relayFD], timeoutMs: 1_000) != 0 {
            kill(relayPid, SIGKILL)
        }
        var status: CInt = 0
        while waitpid(relayPid, &status, 0) < 0 && errno == EINTR {}
        if relayFD >= 0 { close(relayFD) }
        relayFD = -1
        relayPid = 0
        state.relayPid = nil
    }
}
