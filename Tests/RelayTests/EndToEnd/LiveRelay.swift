#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TestSupport
import TetherClient
import TetherProtocol

/// A real agent (`tether-agent --listen unix:...`, a subreaper child of the test) and a real
/// relay process (`tether relay --agent unix:... --listen unix:...`), for end-to-end tests of
/// the CLI and the library as users run them. Everything is SIGKILLed when the value goes,
/// and so is every process the agent left behind.
final class LiveRelay: @unchecked Sendable {
    let directory: TemporaryDirectory
    let agent: ChildProcess
    var relay: ChildProcess
    var socketPath: String { directory.file("relay.sock") }
    var socket: String { "unix:" + socketPath }
    var logPath: String { directory.file("exec.log") }

    /// `agentPath`: another agent binary (the files tests use the static release build when
    /// there is one, for transfer sizes a debug build would take minutes over).
    init(_ prefix: String = "e2e", relayArguments: [String] = [], agentPath: String? = nil) throws {
        directory = try TemporaryDirectory(prefix)
        agent = try ChildProcess(agentPath ?? Binaries.product("tether-agent").path, ["--listen", "unix:" + directory.file("agent.sock")])
        let arguments = ["relay", "--agent", "unix:" + directory.file("agent.sock"), "--listen", "unix:" + directory.file("relay.sock"),
                         "--log-dir", directory.path, "--agent-timeout", "5s"] + relayArguments
        relay = try ChildProcess(Binaries.product("tether").path, arguments)
        guard relay.waitForOutput("serving clients", onStandardError: true) else {
            throw ClientError("the relay did not start serving:\n\(relay.stderr)")
        }
    }

    deinit {
        relay.signal(SIGKILL)
        let left = descendants(of: agent.pid)
        agent.signal(SIGKILL)
        for pid in left { kill(pid, SIGKILL) }
    }

    func client(name: String = "e2e") async throws -> TetherClient {
        var options = ClientOptions(socket: .unix(path: socketPath))
        options.name = name
        return try await TetherClient.connect(options)
    }

    /// Every process below the agent (its sessions and their children), from /proc.
    func sessionProcesses() -> [Int32] { descendants(of: agent.pid) }

    /// Runs `tether ARGS` against this relay (TETHER_SOCKET) to its end.
    func cli(_ arguments: [String], stdin: String? = nil, environment: [String: String] = [:],
             timeout: TimeInterval = 60) throws -> CLIResult {
        let process = try startCLI(arguments, stdin: stdin != nil, environment: environment)
        if let stdin {
            process.writeStdin(stdin)
            process.closeStdin()
        }
        let status = process.wait(timeout: timeout)
        return CLIResult(status: status, stdout: process.stdout, stderr: process.stderr)
    }

    func startCLI(_ arguments: [String], stdin: Bool = false, environment: [String: String] = [:]) throws -> ChildProcess {
        var env = ProcessInfo.processInfo.environment
        env["TETHER_SOCKET"] = socket
        env["TETHER_ERRORS"] = nil
        for (key, value) in environment { env[key] = value }
        return try ChildProcess([Binaries.product("tether").path] + arguments, environment: env, stdin: stdin)
    }
}

struct CLIResult: CustomStringConvertible {
    /// nil: it did not end in time (and was killed).
    var status: Int32?
    var stdout: String
    var stderr: String
    var description: String { "status \(status.map(String.init) ?? "none")\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// Every descendant of `pid`, children first.
func descendants(of pid: Int32) -> [Int32] {
    var result: [Int32] = []
    var frontier = [pid]
    while let next = frontier.popLast() {
        let children = childProcesses(of: next).map(\.pid)
        result += children
        frontier += children
    }
    return result
}

/// Runs `tether ARGS` with no relay at all (help, usage errors, unreachable sockets).
func runTether(_ arguments: [String], environment: [String: String] = [:]) throws -> CLIResult {
    var env = ProcessInfo.processInfo.environment
    env["TETHER_SOCKET"] = nil
    for (key, value) in environment { env[key] = value }
    let process = try ChildProcess([Binaries.product("tether").path] + arguments, environment: env)
    let status = process.wait(timeout: 60)
    return CLIResult(status: status, stdout: process.stdout, stderr: process.stderr)
}

