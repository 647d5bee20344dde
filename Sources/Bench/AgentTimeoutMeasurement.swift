#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TetherClient
import TetherPosix

/// How long after an agent freezes a waiting command is told (`ClientOptions.agentTimeout`):
/// the deadline plus at most one ping interval (a quarter of it) of lateness is the design.
enum AgentTimeoutMeasurement {
    /// Starts `sleep 600`, SIGSTOPs the agent, and times the wait until the session fails with
    /// agentUnresponsive; SIGCONT and a fresh connection before the next round. Samples are
    /// the time from SIGSTOP to the error.
    static func detection(socket: String, agentPid: pid_t, timeout: Duration, count: Int) async throws -> Timings {
        var timings = Timings(reserving: count)
        for _ in 0..<count {
            var options = ClientOptions(socket: .unix(path: String(socket.dropFirst("unix:".count))))
            options.name = "tether-bench"
            options.agentTimeout = timeout
            let client = try await TetherClient.connect(options)
            defer { client.close() }
            let waiting = try await client.execStream(["sleep", "600"])
            kill(agentPid, SIGSTOP)
            let start = Clock.monotonicNs()
            do {
                _ = try await waiting.wait()
                kill(agentPid, SIGCONT)
                throw BenchError.failed("a session on a frozen agent ended normally")
            } catch let error as TetherError {
                let elapsed = Clock.monotonicNs() - start
                kill(agentPid, SIGCONT)
                guard error.code == .remote(.agentUnresponsive) else { throw BenchError.failed("frozen agent: \(error)") }
                timings.add(elapsed)
            }
            // Until the thawed agent answers again (the relay may have marked it silent too).
            let probe = try await TetherClient.connect(to: socket, name: "tether-bench")
            _ = try await probe.exec(["/bin/true"])
            probe.close()
        }
        return timings
    }
}
