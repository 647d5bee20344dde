#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TestSupport
import TetherBoot
import TetherPosix
import Testing

/// Host state that someone else planted or forged: `$TETHER_HOME` open to others, a sandbox
/// directory of another user, links in place of files the host writes, a state.json naming a
/// process that is not the sandbox's supervisor. Each gives a typed error and touches nothing.
@Suite(.serialized) struct HostStateTests {
    let home = Fixtures.temporaryDirectory("hs")

    var sandboxes: Sandboxes { Fixtures.sandboxes(home: home) }

    /// Runs `tether ARGS...` with this test's `$TETHER_HOME`.
    func tether(_ arguments: [String]) throws -> Fixtures.Output {
        try Fixtures.tether(arguments, home: home, staticAgent: false)
    }

    /// A file outside the state directories that a planted link points at, and its contents.
    func victim(_ label: String) throws -> (path: String, contents: String) {
        let path = Fixtures.temporaryDirectory("victim-\(label)").appendingPathComponent("precious").path
        let contents = "nobody may write here\n"
        try contents.write(toFile: path, atomically: false, encoding: .utf8)
        return (path, contents)
    }

    /// Names, sizes, modes and owners of everything under `directory` (links not followed).
    func snapshot(_ directory: String) -> [String] {
        var result: [String] = []
        let names = ((try? FileManager.default.subpathsOfDirectory(atPath: directory)) ?? []).sorted()
        for name in names {
            var st = stat()
            guard lstat(directory + "/" + name, &st) == 0 else { continue }
            result.append("\(name) \(String(st.st_mode, radix: 8)) \(st.st_uid) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)")
        }
        return result
    }

    /// A sandbox directory made by hand (as a forger would), 0700 under a 0700 home.
    func makeSandboxDirectory(_ name: String) throws -> SandboxPaths {
        let paths = TetherHome(root: home).sandbox(name)
        try PrivateFiles.makeDirectory(home.path)
        try PrivateFiles.makeDirectory(TetherHome(root: home).sandboxesDirectory.path)
        try PrivateFiles.makeDirectory(paths.directory.path)
        return paths
    }

    /// Takes the sandbox's name lock in this process (as a supervisor would); close to release.
    func holdLock(_ paths: SandboxPaths) throws -> CInt {
        let fd = open(paths.lock.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0, flock(fd, LOCK_EX | LOCK_NB) == 0 else { throw FixtureError.failed("flock \(paths.lock.path): \(Errno.current)") }
        return fd
    }

    func writeState(_ state: SandboxState, to paths: SandboxPaths) throws {
        let data = try JSONEncoder().encode(state)
        try data.write(to: paths.state)
    }

    // MARK: $TETHER_HOME and sandbox directories

    @Test(.timeLimit(.minutes(2)))
    func aTetherHomeWritableByOthersIsRefusedAndNothingIsCreatedInIt() throws {
        chmod(home.path, 0o777)
        let before = snapshot(home.path)
        let expected = SandboxError.unsafeState(UnsafePathError(path: home.path, problem: .writableByOthers(mode: 0o777)))
        #expect(throws: expected) {
            try sandboxes.boot(SandboxConfig(name: "open", rootfs: "/nonexistent"))
        }
        #expect(throws: expected) { try sandboxes.stop("open") }
        #expect(snapshot(home.path) == before)
        #expect(expected.message.contains(home.path) && expected.message.contains("0777"), "\(expected.message)")
        #expect(expected.hint == "chmod 700 \(home.path)")

        let ls = try tether(["ls"])
        #expect(ls.status == 1)
        #expect(ls.stderr.contains(home.path) && ls.stderr.contains("0777") && ls.stderr.contains("chmod 700"), "stderr: \(ls.stderr)")
        let stop = try tether(["stop", "open"])
        #expect(stop.status == 1)
        #expect(stop.stderr.contains("writable by group or others"), "stderr: \(stop.stderr)")
        #expect(snapshot(home.path) == before)
    }

    @Test(.timeLimit(.minutes(2)))
    func aSandboxDirectoryOfAnotherUserIsRefusedAndNothingInItIsTouched() throws {
        if geteuid() != 0 { try Test.cancel("needs root to give a directory to another user (chown); this is uid \(geteuid())") }
        let paths = try makeSandboxDirectory("theirs")
        // What its owner keeps there: a state naming a live process of theirs, a lock, a log.
        let sleeper = try ChildProcess(["/bin/sleep", "60"])
        defer { sleeper.signal(SIGKILL) }
        var state = SandboxState(name: "theirs", backend: .namespace, rootfs: "/", status: .running, supervisorPid: sleeper.pid,
                                 agentSocket: paths.agentSocket.path, relaySocket: paths.relaySocket.path)
        state.supervisorStartTime = try ProcessHandle.startTime(of: sleeper.pid)
        try writeState(state, to: paths)
        try "theirs\n".write(to: paths.supervisorLog, atomically: false, encoding: .utf8)
        let lock = try holdLock(paths)
        defer { close(lock) }
        chmod(paths.directory.path, 0o755)
        for file in [paths.directory.path, paths.state.path, paths.supervisorLog.path, paths.lock.path] { chown(file, 65534, 65534) }
        let before = snapshot(paths.directory.path)

        let expected = SandboxError.unsafeState(UnsafePathError(path: paths.directory.path,
                                                             problem: .wrongOwner(owner: 65534, mode: 0o755, expected: 0)))
        #expect(expected.message.contains(paths.directory.path) && expected.message.contains("uid 65534")
                    && expected.message.contains("0755") && expected.message.contains("expected uid 0"), "\(expected.message)")
        #expect(expected.hint?.contains("chown 0 \(paths.directory.path)") == true)
        #expect(throws: expected) { try sandboxes.stop("theirs") }
        #expect(throws: expected) { try sandboxes.boot(SandboxConfig(name: "theirs", rootfs: "/nonexistent")) }
        let entry = sandboxes.entry("theirs")
        #expect(entry.problem == expected)
        #expect(!entry.isLive && entry.state == nil)
        #expect(sleeper.isRunning, "a refused stop must signal nothing")

        let ls = try tether(["ls"])
        #expect(ls.status == 0)
        #expect(ls.stdout.contains("theirs") && ls.stdout.contains("unsafe"), "ls: \(ls.stdout)")
        #expect(ls.stderr.contains("uid 65534"), "stderr: \(ls.stderr)")
        let stop = try tether(["stop", "theirs"])
        #expect(stop.status == 1)
        #expect(stop.stderr.contains(paths.directory.path) && stop.stderr.contains("uid 65534"), "stderr: \(stop.stderr)")
        let exec = try tether(["exec", "--sandbox", "theirs", "--", "true"])
        #expect(exec.status == 125)
        #expect(exec.stderr.contains("uid 65534"), "stderr: \(exec.stderr)")

        #expect(snapshot(paths.directory.path) == before)
        #expect(sleeper.isRunning)
    }

    @Test(.timeLimit(.minutes(2)))
    func aLinkInPlaceOfASandboxDirectoryIsRefused() throws {
        let elsewhere = Fixtures.temporaryDirectory("elsewhere")
        try PrivateFiles.makeDirectory(TetherHome(root: home).sandboxesDirectory.path)
        let link = TetherHome(root: home).sandbox("linked").directory.path
        #expect(symlink(elsewhere.path, link) == 0)
        let expected = SandboxError.unsafeState(UnsafePathError(path: link, problem: .symbolicLink))
        #expect(throws: expected) { try sandboxes.stop("linked") }
        #expect(throws: expected) { try sandboxes.boot(SandboxConfig(name: "linked", rootfs: "/nonexistent")) }
        #expect(snapshot(elsewhere.path).isEmpty, "nothing may be created through the link")
    }

    // MARK: planted links

    @Test(.timeLimit(.minutes(2)))
    func filesTheHostWritesRefuseAPlantedLinkAndLeaveItsTargetAlone() throws {
        let target = try victim("files")
        let directory = Fixtures.temporaryDirectory("plant").path
        let planted = directory + "/planted"
        #expect(symlink(target.path, planted) == 0)

        #expect(throws: UnsafePathError(path: planted, problem: .symbolicLink)) { _ = try PrivateFiles.openForAppend(planted) }
        #expect(throws: UnsafePathError(path: planted, problem: .symbolicLink)) { _ = try PrivateFiles.openForUpdate(planted) }
        #expect(throws: UnsafePathError(path: planted, problem: .symbolicLink)) { _ = try PrivateFiles.openForReading(planted) }
        #expect(throws: UnsafePathError(path: planted, problem: .symbolicLink)) { _ = try PrivateFiles.read(planted) }
        #expect(throws: UnsafePathError(path: planted, problem: .failed(operation: "open", Errno(rawValue: EEXIST)))) {
            _ = try PrivateFiles.createNew(planted)
        }
        #expect(throws: UnsafePathError(path: planted, problem: .symbolicLink)) { _ = try NameLock.tryAcquire(planted) }
        #expect(UnsafePathError(path: planted, problem: .symbolicLink).errno == Errno(rawValue: ELOOP))
        // An atomic write replaces the link itself.
        try PrivateFiles.writeAtomically(Array("{}\n".utf8), to: planted)
        var st = stat()
        #expect(lstat(planted, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG)
        #expect(try String(contentsOfFile: target.path, encoding: .utf8) == target.contents)

        // A hard link to a file elsewhere has two names; a FIFO would hang a blocking open.
        let hard = directory + "/hard"
        #expect(link(target.path, hard) == 0)
        #expect(throws: UnsafePathError(path: hard, problem: .hardLinked(links: 2))) { _ = try PrivateFiles.openForAppend(hard) }
        let fifo = directory + "/fifo"
        #expect(mkfifo(fifo, 0o600) == 0)
        #expect(throws: UnsafePathError(path: fifo, problem: .notARegularFile(found: "a FIFO"))) { _ = try PrivateFiles.read(fifo) }
        #expect(try String(contentsOfFile: target.path, encoding: .utf8) == target.contents)
    }

    @Test(.timeLimit(.minutes(2)))
    func aRelayRefusesAPlantedExecLogLinkAndTheTargetStaysUnchanged() throws {
        let target = try victim("relay")
        let directory = Fixtures.temporaryDirectory("plantlog").path
        #expect(symlink(target.path, directory + "/exec.log") == 0)
        // The relay opens exec.log before it looks for the agent, so none is needed here.
        let relay = try tether(["relay", "--agent", "unix:" + directory + "/agent.sock", "--listen", "unix:" + directory + "/relay.sock",
                                "--agent-timeout", "1s"])
        #expect(relay.status != 0)
        #expect(relay.stderr.contains("ELOOP"), "stderr: \(relay.stderr)")
        #expect(try String(contentsOfFile: target.path, encoding: .utf8) == target.contents)
    }

    @Test(.timeLimit(.minutes(5)))
    func aSandboxWithAPlantedExecLogLinkBootsWithoutARelayAndTheTargetStaysUnchanged() throws {
        try Fixtures.requireRoot()
        let target = try victim("sandbox")
        let paths = try makeSandboxDirectory("planted")
        #expect(symlink(target.path, paths.execLog.path) == 0)
        let config = SandboxConfig(name: "planted", rootfs: try Fixtures.busyboxRootfs(), relayExecutable: Binaries.product("tether").path)
        let state = try sandboxes.boot(config)
        defer { _ = try? sandboxes.stop("planted", graceMs: 1_000) }
        #expect(state.relayPid == nil)
        #expect(state.warnings.contains { $0.contains("relay") }, "warnings: \(state.warnings)")
        let log = String(decoding: (try? PrivateFiles.read(paths.supervisorLog.path)) ?? [], as: UTF8.self)
        #expect(log.contains("ELOOP"), "supervisor.log: \(log)")
        try sandboxes.stop("planted", graceMs: 1_000)
        #expect(try String(contentsOfFile: target.path, encoding: .utf8) == target.contents)
    }

    @Test(.timeLimit(.minutes(5)))
    func theGuestsBootErrorIsReadButNeverThroughALinkTheGuestMade() throws {
        try Fixtures.requireRoot()
        // A guest tree whose "agent" reports a boot error as the agent does when its PID 1 set-up
        // fails (boot-error.json in its root, which is its own layer now, and the same JSON on
        // the console), and exits before any hello.
        let rootfs = Fixtures.temporaryDirectory("guestlink").appendingPathComponent("rootfs").path
        let source = try Fixtures.busyboxRootfs()
        let copy = try Fixtures.run(["/bin/cp", "-a", source, rootfs])
        #expect(copy.status == 0, "cp: \(copy.stderr)")
        let agent = rootfs + SandboxConfig.defaultAgentPath
        try FileManager.default.removeItem(atPath: agent)
        try """
            #!/bin/sh
            mkdir -p /.tether
            echo '{"stage":"init","errno":5,"message":"from the guest"}' > /.tether/boot-error.json
            echo 'tether-agent: boot failed: {"stage":"init","errno":5,"message":"from the guest"}' >&2
            exit 3
            """.write(toFile: agent, atomically: false, encoding: .utf8)
        chmod(agent, 0o755)
        #expect(throws: SandboxError.bootFailed(BootFailure(stage: BootStage(rawValue: "init"), errno: 5, message: "the agent: from the guest"))) {
            try sandboxes.boot(SandboxConfig(name: "guesterr", rootfs: rootfs))
        }

        // The image holds /.tether as a link to a host directory (an absolute link resolves on
        // the host's side there). The host neither removes nor reads the file the link leads to.
        let hostDirectory = Fixtures.temporaryDirectory("hostside").path
        let hostFile = hostDirectory + "/boot-error.json"
        let hostContents = #"{"stage":"init","errno":1,"message":"a host file"}"# + "\n"
        try hostContents.write(toFile: hostFile, atomically: false, encoding: .utf8)
        // (The guest's writes went to its own layer: the image has no /.tether of its own.)
        try? FileManager.default.removeItem(atPath: rootfs + "/.tether")
        #expect(symlink(hostDirectory, rootfs + "/.tether") == 0)
        try "#!/bin/sh\nexit 3\n".write(toFile: agent, atomically: false, encoding: .utf8)
        do {
            _ = try sandboxes.boot(SandboxConfig(name: "guestlink", rootfs: rootfs))
            Issue.record("the boot succeeded")
        } catch {
            guard case .bootFailed(let failure) = error else { Issue.record("\(error)"); return }
            #expect(failure.stage == .handshake, "\(failure)")
            #expect(!failure.message.contains("a host file"), "\(failure)")
        }
        #expect(try String(contentsOfFile: hostFile, encoding: .utf8) == hostContents)
    }

    // MARK: forged state.json

    @Test(.timeLimit(.minutes(2)))
    func aForgedStateNamingAnotherProcessSignalsNothing() throws {
        let sleeper = try ChildProcess(["/bin/sleep", "60"])
        defer { sleeper.signal(SIGKILL) }
        let paths = try makeSandboxDirectory("forged")
        var state = SandboxState(name: "forged", backend: .namespace, rootfs: "/", status: .running, supervisorPid: sleeper.pid,
                                 agentSocket: paths.agentSocket.path, relaySocket: paths.relaySocket.path)
        state.sandboxPid = sleeper.pid
        try writeState(state, to: paths)

        // Nobody holds the name: not running, whatever state.json says.
        #expect(throws: SandboxError.notRunning(name: "forged")) { try sandboxes.stop("forged", graceMs: 100) }
        let cli = try tether(["stop", "forged", "--grace", "100ms"])
        #expect(cli.status == 1)
        #expect(cli.stderr.contains("no sandbox named 'forged' is running"), "stderr: \(cli.stderr)")
        #expect(sleeper.isRunning)

        // The name is held (here, by this test), and state.json names the sleep with no start
        // time, then with a wrong one, then with its true one: it still holds no lock.
        let lock = try holdLock(paths)
        defer { close(lock) }
        let truth = try ProcessHandle.startTime(of: sleeper.pid)
        for (recorded, reason) in [(nil, "state.json records no start time to check it against"),
                                   (truth + 1, "it started at tick \(truth) after boot, the supervisor at tick \(truth + 1)"),
                                   (truth, "it does not hold the sandbox's lock")] as [(UInt64?, String)] {
            state.supervisorStartTime = recorded
            try writeState(state, to: paths)
            #expect(throws: SandboxError.untrustedState(name: "forged", pid: sleeper.pid, reason: reason)) {
                try sandboxes.stop("forged", graceMs: 100)
            }
            #expect(sleeper.isRunning, "nothing may be signalled on a forged state.json (\(reason))")
        }
        let forged = try tether(["stop", "forged", "--grace", "100ms"])
        #expect(forged.status == 1)
        #expect(forged.stderr.contains("pid \(sleeper.pid)") && forged.stderr.contains("nothing was signalled"), "stderr: \(forged.stderr)")
        #expect(sleeper.isRunning)
        // A PID that names no process at all.
        state.supervisorPid = Int32.max - 1
        try writeState(state, to: paths)
        #expect(throws: SandboxError.untrustedState(name: "forged", pid: Int32.max - 1, reason: "no process has that pid")) {
            try sandboxes.stop("forged", graceMs: 100)
        }
        #expect(sleeper.isRunning)
    }

    @Test(.timeLimit(.minutes(5)))
    func aLiveSandboxsStateRewrittenToNameAnotherProcessIsNotObeyed() throws {
        try Fixtures.requireRoot()
        let sleeper = try ChildProcess(["/bin/sleep", "60"])
        defer { sleeper.signal(SIGKILL) }
        let booted = try sandboxes.boot(SandboxConfig(name: "live", rootfs: try Fixtures.busyboxRootfs()))
        defer { _ = try? sandboxes.stop("live", graceMs: 1_000) }
        let paths = sandboxes.home.sandbox("live")
        #expect(booted.supervisorStartTime != nil && booted.sandboxStartTime != nil)

        // The lock is held (by the real supervisor), the start time is the sleep's true one.
        var forged = booted
        forged.supervisorPid = sleeper.pid
        forged.supervisorStartTime = try ProcessHandle.startTime(of: sleeper.pid)
        try writeState(forged, to: paths)
        #expect(throws: SandboxError.untrustedState(name: "live", pid: sleeper.pid, reason: "it does not hold the sandbox's lock")) {
            try sandboxes.stop("live", graceMs: 1_000)
        }
        #expect(sleeper.isRunning)
        #expect(Fixtures.isRunning(booted.supervisorPid) && Fixtures.isRunning(booted.sandboxPid))

        // The true state stops it.
        try writeState(booted, to: paths)
        let outcome = try sandboxes.stop("live", graceMs: 2_000)
        guard case .stopped = outcome else { Issue.record("stop: \(outcome)"); return }
        #expect(!Fixtures.isRunning(booted.supervisorPid))
        #expect(sleeper.isRunning)
    }

    @Test(.timeLimit(.minutes(5)))
    func aStuckSupervisorIsKilledWithItsSandboxThroughPidfds() throws {
        try Fixtures.requireRoot()
        let booted = try sandboxes.boot(SandboxConfig(name: "stuck", rootfs: try Fixtures.busyboxRootfs()))
        defer { _ = try? sandboxes.stop("stuck", graceMs: 1_000) }
        // A stopped supervisor cannot act on the stop request: stop kills both after the grace.
        #expect(kill(booted.supervisorPid, SIGSTOP) == 0)
        #expect(try sandboxes.stop("stuck", graceMs: 0) == .killed)
        #expect(!Fixtures.isRunning(booted.supervisorPid))
        #expect(!Fixtures.isRunning(booted.sandboxPid))
        #expect(sandboxes.entry("stuck").state?.status == .stopped)
        #expect(!sandboxes.entry("stuck").isLive)
    }

    @Test(.timeLimit(.minutes(5)))
    func aBootedSandboxsDirectoriesAreCreatedPrivate() throws {
        try Fixtures.requireRoot()
        let fresh = home.appendingPathComponent("fresh")
        let sandboxes = Sandboxes(home: TetherHome(root: fresh), supervisorExecutable: Binaries.product("tether-sandbox").path)
        _ = try sandboxes.boot(SandboxConfig(name: "private", rootfs: try Fixtures.busyboxRootfs()))
        defer { _ = try? sandboxes.stop("private", graceMs: 1_000) }
        for directory in [fresh.path, sandboxes.home.sandboxesDirectory.path, sandboxes.home.sandbox("private").directory.path] {
            var st = stat()
            #expect(lstat(directory, &st) == 0)
            #expect(st.st_mode & 0o777 == 0o700 && st.st_uid == geteuid(), "\(directory): \(String(st.st_mode, radix: 8))")
        }
        try sandboxes.stop("private", graceMs: 1_000)
    }
}
