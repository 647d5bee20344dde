#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherProtocol

/// Every failure kind a `failed` event can carry, reached for real, with its errno and stage.
@Suite struct FailureTests {
    func expectFailure(_ t: Transcript, _ kind: SpawnFailureKind, errno: Int32, stage: SpawnStage,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(t.events == [.failed], sourceLocation: sourceLocation)
        #expect(t.endKind == .failed, sourceLocation: sourceLocation)
        #expect(t.failed?.kind == kind, "\(String(describing: t.failed))", sourceLocation: sourceLocation)
        #expect(t.failed?.errno == errno, "\(String(describing: t.failed))", sourceLocation: sourceLocation)
        #expect(t.failed?.stage == stage, "\(String(describing: t.failed))", sourceLocation: sourceLocation)
        #expect(!(t.failed?.message.isEmpty ?? true), sourceLocation: sourceLocation)
    }

    @Test(.timeLimit(.minutes(1)))
    func notFoundPermissionDeniedNotExecutable() throws {
        let dir = try TemporaryDirectory()
        let plain = try dir.write("plain", "#!/bin/sh\necho no\n", mode: 0o644)
        let garbage = try dir.write("garbage", "\u{7F}not an executable format\n", mode: 0o755)
        let agent = try startAgent()
        expectFailure(try run(agent, ExecRequest(argv: ["/no/such/program"]), id: 1), .notFound, errno: ENOENT, stage: .exec)
        expectFailure(try run(agent, ExecRequest(argv: ["no-such-program-anywhere"]), id: 2), .notFound, errno: ENOENT, stage: .exec)
        expectFailure(try run(agent, ExecRequest(argv: [OSString(plain)]), id: 3), .permissionDenied, errno: EACCES, stage: .exec)
        expectFailure(try run(agent, ExecRequest(argv: [OSString(garbage)]), id: 4), .notExecutable, errno: ENOEXEC, stage: .exec)
        // execve(2) of a directory is EACCES.
        expectFailure(try run(agent, ExecRequest(argv: [OSString(dir.path)]), id: 5), .permissionDenied, errno: EACCES, stage: .exec)
    }

    @Test(.timeLimit(.minutes(1)))
    func badWorkingDirectory() throws {
        let agent = try startAgent()
        expectFailure(try run(agent, ExecRequest(argv: ["/bin/true"], cwd: "/no/such/dir")), .badCwd, errno: ENOENT, stage: .chdir)
        expectFailure(try run(agent, ExecRequest(argv: ["/bin/true"], cwd: "/etc/passwd"), id: 2), .badCwd, errno: ENOTDIR, stage: .chdir)
    }

    @Test(.timeLimit(.minutes(1)))
    func badArguments() throws {
        let agent = try startAgent()
        expectFailure(try run(agent, ExecRequest(argv: []), id: 1), .badArgs, errno: EINVAL, stage: .argv)
        expectFailure(try run(agent, ExecRequest(argv: ["/bin/echo", OSString(bytes: [0x61, 0, 0x62])]), id: 2), .badArgs, errno: EINVAL, stage: .argv)
        expectFailure(try run(agent, ExecRequest(argv: ["/bin/true"], env: ["A": OSString(bytes: [0x61, 0])]), id: 3), .badArgs, errno: EINVAL, stage: .env)
        expectFailure(try run(agent, ExecRequest(argv: ["/bin/true"], env: ["A=B": "c"]), id: 4), .badArgs, errno: EINVAL, stage: .env)
        expectFailure(try run(agent, ExecRequest(argv: ["/bin/true"], cwd: OSString(bytes: [0x2F, 0])), id: 5), .badArgs, errno: EINVAL, stage: .cwd)
        expectFailure(try run(agent, ExecRequest(argv: ["/bin/true"], rlimits: ["bogus": ResourceLimit(soft: 1, hard: 1)]), id: 6),
                      .badArgs, errno: EINVAL, stage: .rlimits)
        expectFailure(try run(agent, ExecRequest(argv: ["/bin/true"], user: "a:b:c"), id: 7), .badArgs, errno: EINVAL, stage: .user)
        // One argument above MAX_ARG_STRLEN (128 KiB): execve(2) says E2BIG.
        let huge = OSString(String(repeating: "x", count: 200_000))
        expectFailure(try run(agent, ExecRequest(argv: ["/bin/echo", huge]), id: 8), .badArgs, errno: E2BIG, stage: .exec)
    }

    @Test(.timeLimit(.minutes(1)))
    func resourceLimitFromSetrlimitAndFromExec() throws {
        let agent = try startAgent()
        // soft above hard: setrlimit(2) says EINVAL.
        expectFailure(try run(agent, ExecRequest(argv: ["/bin/true"], rlimits: ["nofile": ResourceLimit(soft: 100, hard: 10)]), id: 1),
                      .resourceLimit, errno: EINVAL, stage: .setrlimit)
        // nproc 0 for a user who already runs a process: setuid(2) marks the process as over
        // the limit and execve(2) then says EAGAIN.
        try agent.client.exec(ExecRequest(argv: ["/bin/sleep", "1000"], user: "nobody"), id: 2)
        #expect(try agent.client.nextEvent(id: 2).kind == .started)
        expectFailure(try run(agent, ExecRequest(argv: ["/bin/true"], user: "nobody", rlimits: ["nproc": ResourceLimit(soft: 0, hard: 0)]), id: 3),
                      .resourceLimit, errno: EAGAIN, stage: .exec)
        try agent.client.send(KillRequest(), id: 2)
        #expect(try agent.client.collect(id: 2).exited == .signal(SIGKILL))
    }

    @Test(.timeLimit(.minutes(1)))
    func resourceLimitWhenTheAgentRunsOutOfDescriptors() throws {
        // The agent with 32 descriptors at most: sessions that keep running use them up.
        let agent = try startAgent(wrapper: ["/usr/bin/prlimit", "--nofile=32:32", "--"])
        var id: UInt32 = 0
        var failure: Failed?
        while failure == nil && id < 40 {
            id += 1
            try agent.client.exec(ExecRequest(argv: ["/bin/sleep", "1000"], stdin: .pipe), id: id)
            let first = try agent.client.nextEvent(id: id)
            if first.kind == .failed { failure = try first.decode(Failed.self) }
        }
        let failed = try #require(failure)
        #expect(failed.kind == .resourceLimit)
        #expect(failed.errno == EMFILE)
        #expect([SpawnStage.pipes, .reportPipe, .stdin].contains(failed.stage))
        // The agent survives, and works again once descriptors are free.
        for running in 1..<id { try agent.client.send(KillRequest(), id: running) }
        for running in 1..<id { _ = try agent.client.collect(id: running) }
        #expect(try run(agent, sh("echo ok"), id: 100).stdoutText == "ok\n")
    }

    @Test(.timeLimit(.minutes(1)))
    func anUnknownUserOrGroupIsUserSetupFailedNamingIt() throws {
        let agent = try startAgent()
        // One of the ten documented kinds; the message says which name was missing.
        let user = try run(agent, ExecRequest(argv: ["/bin/true"], user: "no-such-user-here"), id: 1)
        expectFailure(user, .userSetupFailed, errno: ENOENT, stage: .user)
        #expect(user.failed?.message.contains("user 'no-such-user-here'") == true, "\(String(describing: user.failed))")
        let group = try run(agent, ExecRequest(argv: ["/bin/true"], user: "root:no-such-group-here"), id: 2)
        expectFailure(group, .userSetupFailed, errno: ENOENT, stage: .user)
        #expect(group.failed?.message.contains("group 'no-such-group-here'") == true, "\(String(describing: group.failed))")
        #expect(SpawnFailureKind.known.count == 10)
    }

    @Test(.timeLimit(.minutes(1)))
    func userSetupFailed() throws {
        let agent = try startAgent()
        // (gid_t)-1 is no valid group: setgroups(2) says EINVAL.
        expectFailure(try run(agent, ExecRequest(argv: ["/bin/true"], user: "0:4294967295"), id: 1), .userSetupFailed, errno: EINVAL, stage: .setgroups)
        // In a user namespace where setgroups is denied: EPERM.
        let confined = try startAgent(wrapper: ["/usr/bin/unshare", "--user", "--map-root-user", "--"])
        expectFailure(try run(confined, ExecRequest(argv: ["/bin/true"], user: "0"), id: 1), .userSetupFailed, errno: EPERM, stage: .setgroups)
    }

    @Test(.timeLimit(.minutes(1)))
    func outOfMemoryWhenForkSaysENOMEM() throws {
        // `unshare --pid` without --fork: the agent's first child becomes PID 1 of a new PID
        // namespace; once it has exited, fork(2) in that namespace fails with ENOMEM.
        let agent = try startAgent(wrapper: ["/usr/bin/unshare", "--pid", "--"])
        #expect(try run(agent, ExecRequest(argv: ["/bin/true"]), id: 1).exited == .code(0))
        expectFailure(try run(agent, ExecRequest(argv: ["/bin/true"]), id: 2), .outOfMemory, errno: ENOMEM, stage: .fork)
    }

    @Test(.timeLimit(.minutes(1)))
    func ptySetupFailed() throws {
        // /dev/ptmx that is not a pty multiplexer (here /dev/null): the TIOCSPTLCK ioctl fails
        // with ENOTTY, which unlockpt(3) reports as EINVAL (as POSIX has it).
        let agent = try startAgent(wrapper: ["/usr/bin/unshare", "--mount", "--", "/bin/sh", "-c",
                                             "mount --bind /dev/null /dev/ptmx && exec \"$0\" \"$@\""])
        expectFailure(try run(agent, ExecRequest(argv: ["/bin/true"], tty: TerminalSize(rows: 24, cols: 80))),
                      .ptySetupFailed, errno: EINVAL, stage: .unlockpt)
    }

    @Test(.timeLimit(.minutes(1)))
    func otherForErrorsWithoutAKindOfTheirOwn() throws {
        let dir = try TemporaryDirectory()
        _ = symlink(dir.path + "/b", dir.path + "/a")
        _ = symlink(dir.path + "/a", dir.path + "/b")
        let agent = try startAgent()
        expectFailure(try run(agent, ExecRequest(argv: [OSString(dir.path + "/a")])), .other, errno: ELOOP, stage: .exec)
    }
}
