#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import Foundation
import TetherPosix
import TetherProtocol

/// The host process that stays with one sandbox (`tether-sandbox supervise DIR`).
///
/// Owns: the name's lock (inherited, held until it exits), the sandbox's first process (its
/// child: namespace PID 1 or the krun runner, reaped here), the sandbox's cgroup and sockets,
/// and `state.json`. Single-threaded: every wait (the handshake, the relay, a stop request, the
/// sandbox's end) is an epoll `EventLoop` on a signalfd, pidfds and sockets (`Handshake.wait`).
/// Ends when the sandbox ends: after a stop request (SIGTERM, whose sigqueue(3) value is the
/// grace in milliseconds), or when the sandbox exits by itself; either way it records how the
/// sandbox ended, removes sockets, cgroup and overlay, and exits (releasing the name).
public final class Supervisor {
    /// Grace for a plain SIGTERM (no sigqueue value), and the margin after the grace before the
    /// sandbox is killed: the agent spends up to the grace on its sessions, then powers off.
    public static let defaultGraceMs: UInt64 = 10_000
    static let killMarginMs: UInt64 = 3_000

    let paths: SandboxPaths
    let config: SandboxConfig
    let lock: NameLock
    var readyFD: CInt
    let executable: String
    var state: SandboxState
    var sandboxPid: pid_t = 0
    var pidfd: CInt = -1
    var cgroup: Cgroup?
    /// `--network egress`: the namespace and pasta, ended with the sandbox.
    var egress: EgressNetwork?
    var signals: OwnedFD
    /// The relay (`tether relay`, our child) and a pidfd for it, while it runs.
    var relayPid: pid_t = 0
    var relayFD: CInt = -1
    var relayRestarts = 0
    /// The console log's size when this boot began: what an earlier boot printed is not ours.
    var consoleStart: UInt64 = 0
    static let maxRelayRestarts = 5

    init(paths: SandboxPaths, config: SandboxConfig, lock: consuming NameLock, readyFD: CInt, executable: String) throws(Errno) {
        self.paths = paths
        self.config = config
        self.lock = lock
        self.readyFD = readyFD
        self.executable = executable
        let handled = [SIGTERM, SIGINT, SIGHUP, SIGCHLD]
        try Signals.block(handled)
        Signals.ignore(SIGPIPE)
        signals = try Signals.openSignalFD(handled)
        state = SandboxState(name: config.name, backend: config.backend, rootfs: config.rootfs, status: .booting,
                             supervisorPid: getpid(), agentSocket: paths.agentSocket.path,
                             relaySocket: paths.relaySocket.path)
        // With the PID, what `tether stop` checks before it signals us.
        state.supervisorStartTime = try? ProcessHandle.startTime(of: getpid())
    }

    deinit {
        if pidfd >= 0 { close(pidfd) }
        if relayFD >= 0 { close(relayFD) }
    }

    /// `tether-sandbox supervise DIR [--lock-fd N] [--ready-fd N] [--detach]`: returns the exit code.
    public static func main(_ arguments: [String]) -> Int32 {
        var lockFD: CInt = 3
        var readyFD: CInt = -1
        var detach = false
        var directory: String?
        var rest = arguments[...]
        while let argument = rest.popFirst() {
            switch argument {
            case "--lock-fd": lockFD = CInt(rest.popFirst() ?? "") ?? -1
            case "--ready-fd": readyFD = CInt(rest.popFirst() ?? "") ?? -1
            case "--detach": detach = true
            default: directory = argument
            }
        }
        guard let directory, lockFD >= 0 else {
            log("usage: tether-sandbox supervise DIR [--lock-fd N] [--ready-fd N] [--detach]")
            return 2
        }
        if detach {
            // A daemon: the parent (the CLI's child) exits at once and is reaped by the CLI; this
            // process is then nobody's child but init's. Only one thread exists so far.
            let pid = fork()
            if pid < 0 { log("fork: \(Errno.current)"); return 1 }
            if pid > 0 { _exit(0) }
        }
        // Everything below reads and writes in this directory as its owner: it must be ours and
        // closed to others (the CLI checked it too; it may have changed since).
        do { try PrivateFiles.checkDirectory(directory) } catch {
            log(error.description)
            return 1
        }
        let paths = SandboxPaths(directory: URL(fileURLWithPath: directory, isDirectory: true))
        let config: SandboxConfig
        do { config = try SandboxConfig.load(from: paths.config) } catch {
            log(error.message)
            return 1
        }
        let supervisor: Supervisor
        do {
            supervisor = try Supervisor(paths: paths, config: config, lock: NameLock(adopting: lockFD),
                                        readyFD: readyFD, executable: selfExecutable())
        } catch {
            log("signal setup failed: \(error)")
            return 1
        }
        return supervisor.run()
    }

    public static func log(_ line: String) {
        FileHandle.standardError.write(Data("tether-sandbox: \(line)\n".utf8))
    }

    static func selfExecutable() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    // MARK: lifecycle

    func run() -> Int32 {
        try? FileManager.default.removeItem(at: paths.bootError)
        // Ports exposed in an earlier life of this name (one that ended without cleaning up).
        unlink(paths.ports.path)
        // A report an earlier boot of this rootfs left behind is not about this one.
        if let directory = agentBootErrorDirectory() { unlinkat(directory.raw, agentBootErrorFile, 0) }
        consoleStart = ((try? FileManager.default.attributesOfItem(atPath: paths.console.path))?[.size] as? UInt64) ?? 0
        state.save(to: paths.state)
        let startedNs = Clock.monotonicNs()
        do {
            (sandboxPid, cgroup, egress) = try startBackend()
        } catch {
            return failed(error)
        }
        recordNetwork()
        if let egress, let failure = egress.waitUntilConfigured(sandboxPid: sandboxPid) {
            killAndReap()
            return failed(failure)
        }
        state.sandboxPid = sandboxPid
        // Our child, not yet reaped: the PID cannot name another process while we read this.
        state.sandboxStartTime = try? ProcessHandle.startTime(of: sandboxPid)
        state.cgroups = cgroup?.directories
        state.save(to: paths.state)
        pidfd = csys_pidfd_open(sandboxPid, 0)
        guard pidfd >= 0 else {
            kill(sandboxPid, SIGKILL)
            return failed(BootFailure(stage: .namespace, errno: -pidfd, message: "pidfd_open(\(sandboxPid)) failed"))
        }

        let deadline = startedNs + config.handshakeTimeoutMs * 1_000_000
        switch Handshake.waitForAgent(socketPath: paths.agentSocket.path, pidfd: pidfd, abortFD: signals.raw, deadlineNs: deadline) {
        case .hello(let hello):
            state.status = .running
            state.readyAt = Date().timeIntervalSince1970
            state.bootToHelloMs = Double(Clock.monotonicNs() - startedNs) / 1e6
            state.agentVersion = hello.agentVersion ?? "protocol \(hello.version)"
            state.save(to: paths.state)
        case .exited:
            let how = reap()
            return failed(bootError() ?? BootFailure(
                stage: .handshake, errno: 0,
                message: "the sandbox \(how) before the agent said hello\(consoleTail())"))
        case .refused(let error):
            killAndReap()
            return failed(BootFailure(stage: .handshake, errno: error.errno ?? 0,
                                      message: "the agent answered the handshake with \(error.code): \(error.message)"))
        case .aborted:
            killAndReap()
            return failed(BootFailure(stage: .handshake, errno: ECANCELED, message: "stopped while booting"))
        case .timedOut(let lastError):
            killAndReap()
            let seconds = Double(config.handshakeTimeoutMs) / 1000
            return failed(bootError() ?? BootFailure(
                stage: .handshake, errno: ETIMEDOUT,
                message: "the agent did not say hello within \(seconds) s"
                    + (lastError.map { " (last attempt: \($0))" } ?? "") + consoleTail(),
                hint: "see \(paths.console.path); a slow init may need a longer handshake deadline"))
        }

        startRelay()
        signalReady()
        return serve()
    }

    /// Waits for the sandbox to end or for a stop request.
    func serve() -> Int32 {
        while true {
            switch Handshake.wait(fds: [pidfd, signals.raw, relayFD, egress?.pastaFD ?? -1], timeoutMs: -1) {
            case 0:
                let how = reap()
                return finished(exit: how)
            case 2:
                // The relay ended on its own (crashed, killed, or gave up on the agent) while the
                // sandbox runs: a new one adopts the agent's detached sessions. A relay that
                // keeps dying is given up on, and the sandbox goes on without one.
                stopRelay()
                if relayRestarts < Supervisor.maxRelayRestarts {
                    relayRestarts += 1
                    Supervisor.log("the relay ended on its own; starting it again (\(relayRestarts) of \(Supervisor.maxRelayRestarts))")
                    startRelay()
                } else {
                    state.warnings.append("the relay ended \(relayRestarts + 1) times (see \(paths.supervisorLog.path)); the sandbox runs without one")
                    state.save(to: paths.state)
                }
            case 3:
                networkComponentEnded()
            case 1:
                var info = signalfd_siginfo()
                while Glibc.read(signals.raw, &info, MemoryLayout<signalfd_siginfo>.size) == MemoryLayout<signalfd_siginfo>.size {
                    let signal = CInt(info.ssi_signo)
                    guard signal != SIGCHLD else { continue }
                    // sigqueue(3) from `tether stop` carries the grace; a plain kill has no value.
                    let graceMs = info.ssi_code == SI_QUEUE && info.ssi_int > 0 ? UInt64(info.ssi_int) : Supervisor.defaultGraceMs
                    return finished(exit: stop(graceMs: graceMs))
                }
            default:
                continue
            }
        }
    }

    /// Asks the agent to shut down, waits the grace and a margin, then kills.
    func stop(graceMs: UInt64) -> String {
        state.status = .stopping
        stopRelay()
        state.save(to: paths.state)
        if !requestShutdown(graceMs: graceMs) && config.backend == .namespace {
            // The agent did not read our request: another client holds its one connection (the
            // relay is stopped first, but a client may have connected to agent.sock directly).
            // SIGTERM is the agent's other way in: PID 1 itself, or the agent process an init
            // handed PID 1 runs beside it (never the init: systemd re-executes on SIGTERM).
            for pid in agentProcesses() { kill(pid, SIGTERM) }
        }
        if Handshake.wait(fds: [pidfd], timeoutMs: Int32(clamping: graceMs + Supervisor.killMarginMs)) == 0 {
            return reap()
        }
        killAndReap()
        return "killed after the \(graceMs) ms grace"
    }

    /// The agent's host pids: the sandbox's first process when it is the agent, else its
    /// children running the agent's executable (after an `--init` hand-off).
    func agentProcesses() -> [pid_t] {
        guard config.initSystem != nil else { return [sandboxPid] }
        let name = String(config.agentPath.split(separator: "/").last ?? "tether-agent").prefix(15)   // comm is 15 bytes
        var result: [pid_t] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") else { continue }
            let comm = stat[stat.index(after: open)..<close]
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            if comm == name, fields.count > 1, pid_t(fields[1]) == sandboxPid { result.append(pid) }
        }
        return result
    }

    /// Sends `shutdown{graceMs}` to the agent over a connection of our own. The relay, when one
    /// runs, has been stopped first (the agent serves one connection at a time).
    func requestShutdown(graceMs: UInt64) -> Bool {
        guard let socket = try? Socket.connect(.unix(path: paths.agentSocket.path)) else { return false }
        var encoder = FrameEncoder()
        encoder.append(id: 0, Hello(role: .relay, name: "tether-supervisor", pid: getpid()))
        encoder.append(id: 0, Shutdown(graceMs: graceMs))
        guard encoder.withPendingBytes({ Handshake.sendAll(socket.raw, $0) }) == nil else { return false }
        // The agent's hello says it took this connection, so it reads the request next.
        var buffer = [UInt8](repeating: 0, count: 512)
        return Handshake.wait(fds: [socket.raw], timeoutMs: 1000) == 0 && Glibc.read(socket.raw, &buffer, buffer.count) > 0
    }

    // MARK: backends

    func startBackend() throws(BootFailure) -> (pid_t, Cgroup?, EgressNetwork?) {
        switch config.backend {
        case .namespace:
            var warnings = state.warnings
            defer { state.warnings = warnings }
            return try NamespaceBackend.start(config, paths: paths, warnings: &warnings)
        case .krun:
            if config.network == .host { state.warnings.append(NetworkMode.hostWarning) }
            return (try startKrunRunner(), nil, nil)
        }
    }

    /// The VMM runner is this executable again (`tether-sandbox krun DIR`): krun_start_enter
    /// takes over its process, so it cannot run in this one.
    func startKrunRunner() throws(BootFailure) -> pid_t {
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { if devNull >= 0 { close(devNull) } }
        var launcher = NamespaceLauncher(path: executable, arguments: [executable, "krun", paths.directory.path],
                                         environment: KrunLibrary.processEnvironment().map { "\($0.key)=\($0.value)" })
        launcher.namespaces = []
        launcher.newSession = false
        launcher.parentDeathSignal = SIGKILL
        // Our own stderr is supervisor.log: the runner's messages go there too.
        launcher.descriptors = [(devNull, 0), (2, 1), (2, 2)]
        do {
            return try launcher.launch()
        } catch {
            throw BootFailure(stage: .krunLoad, errno: error.errno.rawValue, message: "starting the VMM runner \(executable) failed: \(error.errno)")
        }
    }

    // MARK: endings

    /// Reaps the sandbox's first process and says how it ended.
    @discardableResult
    func reap() -> String {
        var status: CInt = 0
        while waitpid(sandboxPid, &status, 0) < 0 && errno == EINTR {}
        return Supervisor.describe(status: status, backend: config.backend)
    }

    func killAndReap() {
        kill(sandboxPid, SIGKILL)
        reap()
    }

    static func describe(status: CInt, backend: BackendKind) -> String {
        if csys_wifexited(status) != 0 { return "exited with status \(csys_wexitstatus(status))" }
        let signal = csys_wtermsig(status)
        // reboot(2) in a PID namespace ends its init "killed" by SIGINT (power off, halt) or
        // SIGHUP (restart): pid_namespaces(7).
        if backend == .namespace && signal == SIGINT { return "powered off" }
        if backend == .namespace && signal == SIGHUP { return "rebooted (treated as stopped)" }
        return "was killed by signal \(signal)"
    }

    func failed(_ failure: BootFailure) -> Int32 {
        failure.write(to: paths.bootError)
        state.status = .failed
        state.exit = failure.description
        state.stoppedAt = Date().timeIntervalSince1970
        cleanUp()
        state.save(to: paths.state)
        // Free the name before telling the CLI: once `boot` has thrown, the name is usable.
        flock(lock.fd.raw, LOCK_UN)
        closeReady()
        return 1
    }

    func finished(exit how: String) -> Int32 {
        state.status = .stopped
        state.exit = how
        state.stoppedAt = Date().timeIntervalSince1970
        cleanUp()
        state.save(to: paths.state)
        return 0
    }

    func cleanUp() {
        stopRelay()
        unlink(paths.agentSocket.path)
        unlink(paths.relaySocket.path)
        // Exposed ports end with the sandbox: the next boot of this name starts with none.
        unlink(paths.tunnelSocket.path)
        unlink(paths.ports.path)
        cgroup?.remove()
        stopNetwork()
        if config.ephemeral { try? FileManager.default.removeItem(at: paths.overlay) }
    }

    /// Tells the CLI that booted us that the sandbox is up (one line, then EOF).
    func signalReady() {
        guard readyFD >= 0 else { return }
        // EPIPE: the CLI went away; nothing to do about it.
        _ = try? FileIO.writeAll(readyFD, Array("ready\n".utf8))
        closeReady()
    }

    func closeReady() {
        if readyFD >= 0 { close(readyFD) }
        readyFD = -1
    }
}
