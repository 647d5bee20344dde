#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherClient
import TetherProtocol

/// `tether relay` as users run it: a separate process that confines itself with its seccomp
/// allow-list once it serves (SECCOMP.md). The filter itself is tested in SeccompTests (an
/// execve under it dies of SIGSYS); here the confined relay still does its whole job.
@Suite(.serialized) struct ConfinedRelayTests {
    /// A real agent and a real relay process; the relay confined unless `seccomp` is false.
    final class Pair {
        let directory: TemporaryDirectory
        let agent: ChildProcess
        var relay: ChildProcess
        var socket: String { "unix:" + directory.file("relay.sock") }
        var agentSocket: String { directory.file("agent.sock") }

        init(seccomp: Bool = true) throws {
            directory = try TemporaryDirectory("confined")
            agent = try ChildProcess(Binaries.product("tether-agent").path, ["--listen", "unix:" + directory.file("agent.sock")])
            var arguments = ["relay", "--agent", "unix:" + directory.file("agent.sock"), "--listen", "unix:" + directory.file("relay.sock"),
                             "--agent-timeout", "20s"]
            if !seccomp { arguments.append("--no-seccomp") }
            relay = try ChildProcess(Binaries.product("tether").path, arguments)
            guard relay.waitForOutput("serving clients", onStandardError: true) else {
                throw ClientError("the relay did not start serving:\n\(relay.stderr)")
            }
        }

        deinit {
            relay.signal(SIGKILL)
            agent.signal(SIGKILL)
        }

        /// `Seccomp:` of every thread of the relay (2 = filter mode), from /proc.
        func seccompModes() -> [String] {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(relay.pid)/task")) ?? []
            return tasks.compactMap { task in
                guard let status = try? String(contentsOfFile: "/proc/\(relay.pid)/task/\(task)/status", encoding: .utf8) else { return nil }
                return status.split(separator: "\n").first { $0.hasPrefix("Seccomp:") }
                    .map { $0.dropFirst("Seccomp:".count).trimmingCharacters(in: .whitespaces) }
            }
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func aConfinedRelayServesExecStreamingStdinLogsAndPing() async throws {
        let pair = try Pair()
        let modes = pair.seccompModes()
        #expect(!modes.isEmpty)
        #expect(modes.allSatisfy { $0 == "2" }, "every relay thread must be filtered, got \(modes)")

        let client = try await TetherClient.connect(to: pair.socket)
        defer { client.close() }
        _ = try await client.ping()

        let output = try await client.shell("echo out; echo err >&2; exit 3")
        #expect(output.stdoutText == "out\n")
        #expect(output.stderrText == "err\n")
        #expect(output.exitCode == 3)

        // 8 MiB streamed through the confined relay, every byte accounted for.
        let big = try await client.exec(["/bin/sh", "-c", "head -c 8388608 /dev/zero"])
        #expect(big.stdout.count == 8 << 20)
        #expect(big.stdout.allSatisfy { $0 == 0 })

        var options = ExecOptions()
        options.stdin = true
        let cat = try await client.execStream(["/bin/cat"], options)
        let stdin = try #require(cat.takeStdin())
        try await stdin.write(Array("through the filter\n".utf8))
        try await stdin.close()
        let echoed = try await cat.collect()
        #expect(echoed.stdoutText == "through the filter\n")

        // exec.log is written and read back by the confined relay (its writer thread opens,
        // writes and rotates files under the filter).
        var log: [UInt8] = []
        for try await event in try await client.logs().events {
            if case .stdout(let bytes) = event { log += bytes }
        }
        #expect(String(decoding: log, as: UTF8.self).contains("through the filter"))

        // Nothing the relay did was refused, and it is still the same process.
        #expect(pair.relay.isRunning)
        #expect(!pair.relay.stderr.contains("seccomp blocked"))
    }

    @Test(.timeLimit(.minutes(2)))
    func aConfinedRelayReconnectsToARestartedAgent() async throws {
        let pair = try Pair()
        pair.agent.signal(SIGKILL)
        _ = pair.agent.wait(timeout: 10)
        try? FileManager.default.removeItem(atPath: pair.agentSocket)
        let restarted = try ChildProcess(Binaries.product("tether-agent").path, ["--listen", "unix:" + pair.agentSocket])
        defer { restarted.signal(SIGKILL) }
        #expect(pair.relay.waitForOutput("reconnected to agent", onStandardError: true), "relay stderr:\n\(pair.relay.stderr)")

        // New sockets (socket + connect) after the filter is in place: AF_UNIX is allowed.
        let client = try await TetherClient.connect(to: pair.socket)
        defer { client.close() }
        let output = try await client.exec(["/bin/echo", "after the restart"])
        #expect(output.stdoutText == "after the restart\n")
        #expect(pair.seccompModes().allSatisfy { $0 == "2" })
    }

    @Test(.timeLimit(.minutes(1)))
    func noSeccompLeavesTheRelayUnfilteredAndSaysSo() async throws {
        let pair = try Pair(seccomp: false)
        #expect(pair.relay.stderr.contains("warning: --no-seccomp"))
        #expect(pair.seccompModes().allSatisfy { $0 == "0" })
        let client = try await TetherClient.connect(to: pair.socket)
        defer { client.close() }
        #expect(try await client.exec(["/bin/true"]).success)
    }
}
