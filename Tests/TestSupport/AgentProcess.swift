#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TetherPosix
import TetherProtocol

/// A real `tether-agent` process for end-to-end tests, connected to the test over a
/// socketpair handed to it as fd 3 (`--listen fd:3`, a connected stream). Optionally started
/// through a wrapper (`unshare ...`, `prlimit ...`, `setpriv ...`) that execs it.
///
/// Owns the process: `stop()` closes the connection (the agent then shuts down) and waits;
/// deinit SIGKILLs it if the test did not.
public final class AgentProcess {
    public let pid: pid_t
    public let client: FrameClient
    public private(set) var exitStatus: CInt?

    /// The debug build's agent, for tests that run it as a subreaper.
    public static var debugBinary: String { Binaries.product("tether-agent").path }

    /// Starts `binary` (default: the debug build) with `arguments` after `--listen fd:3`.
    /// `wrapper` is a command line that ends by exec'ing the next argument (the agent).
    /// `command` replaces the whole command line (wrapper, binary, arguments); `stderrPath`
    /// sends the agent's log there instead of the test's stderr.
    public init(binary: String = AgentProcess.debugBinary, wrapper: [String] = [], arguments: [String]? = nil,
                command: [String]? = nil, environment: [String: String] = [:], stderrPath: String? = nil) throws {
        var fds: [CInt] = [-1, -1]
        _ = try retrying { socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0, &fds) }
        let argv = command ?? (wrapper + [binary] + (arguments ?? ["--listen", "fd:3"]))
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        do {
            pid = try spawnProcess(argv, environment: env, passing: fds[1], as: 3, stderrPath: stderrPath)
        } catch {
            _ = Glibc.close(fds[0])
            _ = Glibc.close(fds[1])
            throw error
        }
        _ = Glibc.close(fds[1])
        client = FrameClient(adopting: fds[0])
    }

    deinit {
        if exitStatus == nil {
            _ = kill(pid, SIGKILL)
            var status: CInt = 0
            _ = waitpid(pid, &status, 0)
        }
    }

    /// Reads the hello and sends the client's.
    @discardableResult
    public func handshake() throws -> Hello {
        let hello = try client.expectHello()
        try client.sendHello()
        return hello
    }

    /// Closes the connection; the agent shuts down (TERM, grace, KILL) and exits.
    @discardableResult
    public func stop() -> CInt {
        client.close()
        return waitForExit()
    }

    /// Waits for the agent to exit and returns its wait status.
    @discardableResult
    public func waitForExit() -> CInt {
        if let exitStatus { return exitStatus }
        var status: CInt = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        exitStatus = status
        return status
    }

    /// The agent's open descriptors, from /proc.
    public func openDescriptorCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }
}

/// posix_spawn(3) with one extra descriptor placed at `target`, default signal dispositions
/// and an empty mask (the test runner's own are not the agent's business).
public func spawnProcess(_ argv: [String], environment: [String: String], passing fd: CInt = -1, as target: CInt = 3,
                         stderrPath: String? = nil) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if fd >= 0 { posix_spawn_file_actions_adddup2(&actions, fd, target) }
    if let stderrPath { posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644) }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var all = sigset_t()
    sigfillset(&all)
    var none = sigset_t()
    sigemptyset(&none)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
    let cArgv = argv.map { strdup($0) } + [nil]
    let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        cArgv.forEach { free($0) }
        cEnv.forEach { free($0) }
    }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, argv[0], &actions, &attributes, cArgv, cEnv)
    guard result == 0 else { throw ClientError("posix_spawn \(argv[0]): \(Errno(rawValue: result))") }
    return pid
}

