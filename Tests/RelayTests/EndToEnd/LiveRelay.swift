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

    init(_ prefix: String = "e2e", relayArguments: [String] = []) throws {
        directory = try TemporaryDirectory(prefix)
        agent = try ChildProcess(Binaries.product("tether-agent").path, ["--listen", "unix:" + directory.file("agent.sock")])
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

    func startCLI(_ arguments: [String], stdin: Bool = false, environment: [String: String] = [:]) throws -> CapturedProcess {
        var env = ProcessInfo.processInfo.environment
        env["TETHER_SOCKET"] = socket
        env["TETHER_ERRORS"] = nil
        for (key, value) in environment { env[key] = value }
        return try CapturedProcess([Binaries.product("tether").path] + arguments, environment: env, stdin: stdin)
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
    let process = try CapturedProcess([Binaries.product("tether").path] + arguments, environment: env)
    let status = process.wait(timeout: 60)
    return CLIResult(status: status, stdout: process.stdout, stderr: process.stderr)
}

/// A program with its stdout and stderr read to EOF by one thread each (plain read(2)), and
/// optionally a stdin pipe. SIGKILLed if still running when the value goes.
final class CapturedProcess: @unchecked Sendable {
    let pid: pid_t
    private var stdinFD: CInt = -1
    private let condition = NSCondition()
    private var output: [[UInt8]] = [[], []]
    private var openStreams = 2
    private var status: Int32?

    init(_ argv: [String], environment: [String: String], stdin: Bool = false) throws {
        var outPipe: [CInt] = [-1, -1], errPipe: [CInt] = [-1, -1], inPipe: [CInt] = [-1, -1]
        // Close-on-exec, so concurrent spawns in other tests do not inherit (and hold open) them.
        guard pipe(&outPipe) == 0, pipe(&errPipe) == 0, pipe(&inPipe) == 0 else { throw ClientError("pipe: \(errno)") }
        for fd in outPipe + errPipe + inPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if stdin {
            posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var all = sigset_t(), none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cArgv.forEach { free($0) }; cEnv.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, argv[0], &actions, &attributes, cArgv, cEnv)
        close(outPipe[1]); close(errPipe[1]); close(inPipe[0])
        guard result == 0 else {
            close(outPipe[0]); close(errPipe[0]); close(inPipe[1])
            throw ClientError("posix_spawn \(argv[0]): \(result)")
        }
        self.pid = pid
        if stdin { stdinFD = inPipe[1] } else { close(inPipe[1]) }
        for (index, fd) in [outPipe[0], errPipe[0]].enumerated() {
            let thread = Thread { [self] in
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    if n < 0 && errno == EINTR { continue }
                    condition.lock()
                    if n > 0 { output[index] += buffer[0..<n] } else { openStreams -= 1 }
                    condition.broadcast()
                    condition.unlock()
                    if n <= 0 { break }
                }
                close(fd)
            }
            thread.start()
        }
    }

    deinit {
        if status == nil {
            kill(pid, SIGKILL)
            _ = wait(timeout: 10)
        }
        if stdinFD >= 0 { close(stdinFD) }
    }

    var stdout: String { condition.lock(); defer { condition.unlock() }; return String(decoding: output[0], as: UTF8.self) }
    var stderr: String { condition.lock(); defer { condition.unlock() }; return String(decoding: output[1], as: UTF8.self) }
    var stdoutBytes: [UInt8] { condition.lock(); defer { condition.unlock() }; return output[0] }

    func writeStdin(_ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(stdinFD, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 { if errno == EINTR { continue }; return }
            offset += n
        }
    }

    func closeStdin() {
        if stdinFD >= 0 { close(stdinFD) }
        stdinFD = -1
    }

    func signal(_ number: Int32) { kill(pid, number) }

    /// Waits until stdout (or stderr) contains `text`; false after `timeout`.
    func waitForOutput(_ text: String, onStandardError: Bool = false, timeout: TimeInterval = 30) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while !String(decoding: output[onStandardError ? 1 : 0], as: UTF8.self).contains(text) {
            if !condition.wait(until: deadline) { return false }
        }
        return true
    }

    /// The exit status (128+N for signal N) once it exited and both streams reached EOF;
    /// nil (and the process SIGKILLed) after `timeout`.
    func wait(timeout: TimeInterval = 60) -> Int32? {
        if let status { return status }
        let deadline = Date(timeIntervalSinceNow: timeout)
        var raw: CInt = 0
        while true {
            let r = waitpid(pid, &raw, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { return nil }
            if Date() > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &raw, 0)
                status = -1
                return nil
            }
            usleep(5_000)
        }
        condition.lock()
        while openStreams > 0 && condition.wait(until: deadline) {}
        condition.unlock()
        let exited = raw & 0x7f == 0
        let value = exited ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
        status = value
        return value
    }
}
