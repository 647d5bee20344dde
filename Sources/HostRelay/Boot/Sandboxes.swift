#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import Foundation
import TetherPosix

/// The sandboxes under one `$TETHER_HOME`: boot (start a supervisor and wait until the agent
/// said hello), list, stop. What the CLI's `run`, `boot`, `ls` and `stop` call; safe to use
/// from several processes at once (the name lock decides).
public struct Sandboxes: Sendable {
    public let home: TetherHome
    /// `tether-sandbox`, which supervises one sandbox (and runs krun's VMM).
    public let supervisorExecutable: String

    public init(home: TetherHome, supervisorExecutable: String) {
        self.home = home
        self.supervisorExecutable = supervisorExecutable
    }

    /// A sandbox as `tether ls` shows it.
    public struct Entry: Sendable {
        public var name: String
        /// Whether its supervisor holds the name (the lock), whatever state.json says.
        public var isLive: Bool
        public var state: SandboxState?
        public var paths: SandboxPaths
        /// Why its directory (or $TETHER_HOME) was not read: not ours, open to others, a link.
        /// Such an entry is never live and has no state.
        public var problem: SandboxError?
    }

    /// How `boot` treats a name that is in use.
    public enum Conflict: Sendable {
        case fail
        /// Stop the running one (shutdown, grace, kill) and boot anew.
        case replace(graceMs: UInt64)
    }

    // MARK: boot

    /// Boots a sandbox and returns once its agent said hello (or throws why not). The sandbox
    /// keeps running after this returns, under its supervisor, until `stop`.
    public func boot(_ config: SandboxConfig, onConflict: Conflict = .fail) throws(SandboxError) -> SandboxState {
        guard SandboxName.isValid(config.name) else { throw .invalidName(config.name) }
        if let problem = config.networkProblem { throw .bootFailed(problem) }
        guard FileManager.default.isExecutableFile(atPath: supervisorExecutable) else {
            throw .missingProgram(path: supervisorExecutable)
        }
        let planned = home.sandbox(config.name)
        // sun_path holds 107 bytes: the relay's socket is the longest path a client connects to.
        guard planned.relaySocket.path.utf8.count < 108 else {
            throw .state(operation: "create", path: planned.relaySocket.path,
                         message: "the path is longer than a unix socket allows (107 bytes); use a shorter $TETHER_HOME or name")
        }
        // Created 0700 where missing; an existing one must be ours and closed to others.
        let paths = try home.preparedSandbox(config.name)

        let lock = try takeName(config.name, paths: paths, onConflict: onConflict)
        for stale in [paths.bootError, paths.state, paths.console, paths.supervisorLog] {
            try? FileManager.default.removeItem(at: stale)
        }
        try config.save(to: paths.config)

        // The supervisor gets the locked descriptor as fd 3 and a pipe's write end as fd 4; it
        // writes "ready" there once the agent said hello, or writes boot-error.json and exits.
        var pipeFDs: [CInt] = [-1, -1]
        guard csys_pipe2(&pipeFDs, O_CLOEXEC) == 0 else {
            throw .state(operation: "create a pipe for", path: supervisorExecutable, message: "\(Errno.current)")
        }
        let readyRead = OwnedFD(adopting: pipeFDs[0])
        let readyWrite = OwnedFD(adopting: pipeFDs[1])
        let supervisorLog: OwnedFD
        do { supervisorLog = try PrivateFiles.openForAppend(paths.supervisorLog.path, mode: 0o644) } catch {
            throw .unsafeState(error)
        }
        let log = supervisorLog.raw
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { if devNull >= 0 { close(devNull) } }
        var launcher = NamespaceLauncher(
            path: supervisorExecutable,
            arguments: [supervisorExecutable, "supervise", paths.directory.path, "--lock-fd", "3", "--ready-fd", "4", "--detach"],
            environment: KrunLibrary.processEnvironment().map { "\($0.key)=\($0.value)" })
        launcher.namespaces = []
        launcher.descriptors = [(devNull, 0), (log, 1), (log, 2), (lock.fd.raw, 3), (readyWrite.raw, 4)]
        let pid: pid_t
        do {
            pid = try launcher.launch()
        } catch {
            throw .bootFailed(BootFailure(stage: .namespace, errno: error.errno.rawValue,
                                      message: "starting \(supervisorExecutable) failed: \(error.errno)"))
        }
        // --detach: this child forks the real supervisor and exits at once.
        var status: CInt = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        _ = consume readyWrite
        _ = consume supervisorLog
        _ = consume lock     // the supervisor holds the name now

        let (ready, readError) = readLine(readyRead.raw)
        if ready == "ready" {
            guard let state = SandboxState.load(from: paths.state) else {
                throw .state(operation: "read", path: paths.state.path, message: "missing after the sandbox said ready")
            }
            return state
        }
        if let failure = BootFailure.read(from: paths.bootError) { throw .bootFailed(failure) }
        let said = String(decoding: (try? PrivateFiles.readTail(paths.supervisorLog.path, limit: 4096)) ?? [], as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let pipe = readError.map { "reading its ready pipe failed: \($0)" }
            ?? (ready.isEmpty ? "it closed its ready pipe" : "its ready pipe said \"\(ready)\"")
        throw .bootFailed(BootFailure(stage: .handshake, errno: readError?.rawValue ?? 0,
                                  message: "the supervisor ended without a boot error (\(pipe))" + (said.isEmpty ? "" : ": " + said)))
    }

    /// Takes the name's lock, stopping whoever holds it first when asked to.
    private func takeName(_ name: String, paths: SandboxPaths, onConflict: Conflict) throws(SandboxError) -> NameLock {
        do {
            if let lock = try NameLock.tryAcquire(paths.lock.path) { return lock }
        } catch {
            throw .unsafeState(error)
        }
        guard case .replace(let graceMs) = onConflict else {
            throw .nameConflict(name: name, pid: SandboxState.load(from: paths.state)?.supervisorPid)
        }
        _ = try? stop(name, graceMs: graceMs)
        // stop() returns once the supervisor is gone, and the kernel released its lock then.
        do {
            if let lock = try NameLock.tryAcquire(paths.lock.path) { return lock }
        } catch {
            throw .unsafeState(error)
        }
        throw .nameConflict(name: name, pid: SandboxState.load(from: paths.state)?.supervisorPid)
    }

    /// Reads one line from a pipe, blocking until a newline or EOF.
    /// One line from the supervisor's ready pipe, and the read error that ended it early.
    private func readLine(_ fd: CInt) -> (String, Errno?) {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        var failure: Errno?
        while true {
            let n = Glibc.read(fd, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { failure = .current }
            if n <= 0 || byte == 0x0A { break }
            bytes.append(byte)
        }
        return (String(decoding: bytes, as: UTF8.self), failure)
    }

    // MARK: list

    public func list() -> [Entry] {
        home.sandboxNames().map(entry)
    }

    /// One sandbox as `tether ls` shows it. Its directory is checked first (`TetherHome`); one
    /// that fails the check is reported through `problem`, and nothing in it is read.
    public func entry(_ name: String) -> Entry {
        let paths = home.sandbox(name)
        do {
            _ = try home.checkedSandbox(name)
        } catch .notRunning {
            return Entry(name: name, isLive: false, state: nil, paths: paths)
        } catch {
            return Entry(name: name, isLive: false, state: nil, paths: paths, problem: error)
        }
        return Entry(name: name, isLive: NameLock.isHeld(paths.lock.path), state: SandboxState.load(from: paths.state), paths: paths)
    }

    // MARK: stop

    /// How a stop went.
    public enum StopOutcome: Equatable, Sendable {
        /// The supervisor ended within the grace and its margin; `exit` says how the sandbox ended.
        case stopped(exit: String?)
        /// It had to be killed.
        case killed
    }

    /// Stops a running sandbox: the supervisor asks the agent to shut down (`shutdown{graceMs}`,
    /// which reaches an init handed PID 1 in its own language), waits the grace, then kills it.
    /// Should the supervisor not be gone by the grace plus a margin, the sandbox's process and
    /// the supervisor are killed here. Never waits longer than grace + 10 s.
    ///
    /// Nothing is signalled on the word of state.json alone: the sandbox runs only while its
    /// name's lock is held, and the PID state.json names is signalled through a pidfd, and only
    /// once that process is shown to be the supervisor (`verifiedSupervisor`).
    @discardableResult
    public func stop(_ name: String, graceMs: UInt64 = Supervisor.defaultGraceMs) throws(SandboxError) -> StopOutcome {
        let paths = try home.checkedSandbox(name)
        guard NameLock.isHeld(paths.lock.path), let state = SandboxState.load(from: paths.state) else {
            throw .notRunning(name: name)
        }
        let supervisor: ProcessHandle
        do {
            supervisor = try verifiedSupervisor(state, paths: paths)
        } catch .notRunning {
            // Gone between the lock probe and now.
            return .stopped(exit: SandboxState.load(from: paths.state)?.exit)
        }
        // The grace travels as the sigqueue(3) value; the supervisor reads it from its signalfd.
        do { try supervisor.sendSignal(SIGTERM, value: Int32(clamping: graceMs)) } catch {
            if supervisor.isAlive { throw .state(operation: "signal the supervisor of", path: paths.directory.path, message: "\(error)") }
        }
        let waitMs = Int32(clamping: graceMs + Supervisor.killMarginMs + 2_000)
        if supervisor.waitForExit(timeoutMs: waitMs) {
            return .stopped(exit: SandboxState.load(from: paths.state)?.exit)
        }
        // The supervisor is stuck: kill the sandbox (PID 1 takes its namespace with it; the krun
        // runner takes the VM) and the supervisor; the lock goes with the supervisor. The
        // sandbox is killed only when it is the supervisor's child that started when recorded;
        // otherwise the supervisor's death kills it anyway (its parent-death signal is SIGKILL).
        let sandbox = verifiedSandbox(state, supervisor: supervisor.pid)
        try? sandbox?.sendSignal(SIGKILL)
        try? supervisor.sendSignal(SIGKILL)
        // A PID namespace's init ends only after every process in it is gone.
        _ = sandbox?.waitForExit(timeoutMs: 5_000)
        if !supervisor.waitForExit(timeoutMs: 5_000) {
            throw .stopTimedOut(name: name, pid: supervisor.pid)
        }
        // What the killed supervisor would have cleaned up. Its cgroups empty once the sandbox's
        // processes are gone, which SIGKILL to a PID namespace's init makes happen. Only the
        // cgroups this supervisor would have made (tether-NAME-PID) are removed.
        unlink(paths.agentSocket.path)
        unlink(paths.relaySocket.path)
        // Exposed ports end with the sandbox: the next boot of this name starts with none.
        unlink(paths.tunnelSocket.path)
        unlink(paths.ports.path)
        let leaf = "tether-\(name)-\(supervisor.pid)"
        if let cgroups = state.cgroups { Cgroup.remove(cgroups.filter { $0.split(separator: "/").last.map(String.init) == leaf }) }
        var ended = state
        ended.status = .stopped
        ended.exit = "killed (the supervisor did not finish the stop in time)"
        ended.stoppedAt = Date().timeIntervalSince1970
        ended.save(to: paths.state)
        return .killed
    }

    /// A pidfd of the process state.json names as the supervisor, once it is shown to be it:
    /// alive, started when state.json recorded, and holding the sandbox's lock. Throws
    /// `untrustedState` otherwise, or `notRunning` when the named process is gone and the
    /// lock is free (the sandbox ended meanwhile).
    func verifiedSupervisor(_ state: SandboxState, paths: SandboxPaths) throws(SandboxError) -> ProcessHandle {
        let pid = state.supervisorPid
        func untrusted(_ reason: String) -> SandboxError { .untrustedState(name: state.name, pid: pid, reason: reason) }
        let handle: ProcessHandle
        do {
            handle = try ProcessHandle(pid: pid)
        } catch {
            if !NameLock.isHeld(paths.lock.path) { throw .notRunning(name: state.name) }
            throw untrusted("no process has that pid")
        }
        // Read with the pidfd open, then checked alive: the /proc entries read belonged to the
        // pidfd's process, not to one that took the PID after it.
        guard let recorded = state.supervisorStartTime else { throw untrusted("state.json records no start time to check it against") }
        guard let started = try? ProcessHandle.startTime(of: pid) else { throw untrusted("its /proc/\(pid)/stat cannot be read") }
        guard started == recorded else {
            throw untrusted("it started at tick \(started) after boot, the supervisor at tick \(recorded)")
        }
        guard NameLock.isHeld(paths.lock.path, by: pid) else { throw untrusted("it does not hold the sandbox's lock") }
        guard handle.isAlive else {
            if !NameLock.isHeld(paths.lock.path) { throw .notRunning(name: state.name) }
            throw untrusted("it ended while being checked")
        }
        return handle
    }

    /// A pidfd of the sandbox's first process, when state.json's PID is a child of the
    /// verified supervisor that started when recorded; nil otherwise.
    func verifiedSandbox(_ state: SandboxState, supervisor: pid_t) -> ProcessHandle? {
        guard let pid = state.sandboxPid, let recorded = state.sandboxStartTime,
              let handle = try? ProcessHandle(pid: pid),
              (try? ProcessHandle.parentPid(of: pid)) == supervisor,
              (try? ProcessHandle.startTime(of: pid)) == recorded,
              handle.isAlive else { return nil }
        return handle
    }
}
