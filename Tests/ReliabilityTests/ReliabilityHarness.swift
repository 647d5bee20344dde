#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import TestSupport
import TetherClient
import TetherProtocol

/// Where the binaries under test are: this build's, or TETHER_BIN_DIR (e.g. `.build/release`, to
/// measure the flood ratio with optimized binaries).
func binary(_ name: String) -> String {
    if let dir = ProcessInfo.processInfo.environment["TETHER_BIN_DIR"], !dir.isEmpty { return dir + "/" + name }
    return Binaries.product(name).path
}

/// A real `tether-agent` (unprivileged: a child subreaper listening on a unix socket) and a real
/// `tether relay` process in front of it, as a host runs them outside a VM.
final class AgentAndRelay: @unchecked Sendable {
    let directory: TemporaryDirectory
    var agent: ChildProcess
    var relay: ChildProcess
    var relaySocket: String { "unix:" + directory.file("relay.sock") }
    var agentAddress: String { "unix:" + directory.file("agent.sock") }
    let agentTimeout: String

    init(_ name: String, agentTimeout: String = "20s") throws {
        directory = try TemporaryDirectory(name)
        self.agentTimeout = agentTimeout
        agent = try ChildProcess(binary("tether-agent"), ["--listen", "unix:" + directory.file("agent.sock")])
        relay = try Self.startRelay(directory: directory, agentTimeout: agentTimeout)
    }

    static func startRelay(directory: TemporaryDirectory, agentTimeout: String) throws -> ChildProcess {
        let relay = try ChildProcess(binary("tether"), [
            "relay", "--agent", "unix:" + directory.file("agent.sock"), "--listen", "unix:" + directory.file("relay.sock"),
            "--agent-timeout", agentTimeout, "--no-log",
        ])
        guard relay.waitForOutput("serving clients", onStandardError: true, timeout: 30) else {
            relay.signal(SIGKILL)
            throw ClientError("the relay did not start serving:\n\(relay.stderr)")
        }
        return relay
    }

    /// A second relay after the first one died (the agent takes the next connection).
    func restartRelay() throws {
        relay = try Self.startRelay(directory: directory, agentTimeout: agentTimeout)
    }

    func client() async throws -> TetherClient { try await TetherClient.connect(to: relaySocket) }

    deinit {
        relay.signal(SIGKILL)
        agent.signal(SIGKILL)
        _ = relay.wait(timeout: 10)
        _ = agent.wait(timeout: 10)
    }
}

/// Facts about a process from /proc.
enum ProcFacts {
    static func status(_ pid: Int32, _ field: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }) else { return nil }
        return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" })[1])
    }

    /// Resident set size in KiB.
    static func rssKiB(_ pid: Int32) -> Int { status(pid, "VmRSS") ?? -1 }

    static func descriptorCount(_ pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    /// Zombies among the children of `pid`.
    static func zombies(of pid: Int32) -> Int { childProcesses(of: pid).filter { $0.state == "Z" }.count }

    /// Every process whose real uid is `uid`.
    static func processes(ofUID uid: Int) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { entry -> Int32? in
            guard let pid = Int32(entry),
                  let text = try? String(contentsOfFile: "/proc/\(entry)/status", encoding: .utf8),
                  let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Uid:") }),
                  Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" })[1]) == uid else { return nil }
            return pid
        }
    }
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// Counters shared with a helper thread.
final class Shared: Sendable {
    let flag = Atomic<Bool>(false)
    let count = Atomic<Int>(0)
    let other = Atomic<Int>(0)
    /// For a worker that can be held without being stopped.
    let paused = Atomic<Bool>(false)
}
