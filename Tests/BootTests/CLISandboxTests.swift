#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TestSupport
import TetherBoot
import Testing

/// The `tether` CLI's sandbox commands end to end, as a user types them: `run`, `boot`, `ls`,
/// `stop`, and `exec --sandbox NAME` through the relay the sandbox's supervisor starts. Each
/// test has its own `$TETHER_HOME`.
@Suite(.serialized) struct CLISandboxTests {
    let home = Fixtures.temporaryDirectory("cli")

    /// Runs `tether ARGS...` with this test's `$TETHER_HOME` and the static agent.
    func tether(_ arguments: [String], extra: [String: String] = [:]) throws -> Fixtures.Output {
        try Fixtures.tether(arguments, home: home, extra: extra)
    }

    var sandboxes: Sandboxes { Fixtures.sandboxes(home: home) }

    /// Stops whatever a failed expectation left running.
    func cleanUp(_ names: [String]) {
        for name in names where sandboxes.entry(name).isLive { _ = try? sandboxes.stop(name, graceMs: 1_000) }
    }

    @Test(.timeLimit(.minutes(10)))
    func runWithTheDefaultRootfsPrintsTheGuestsUnameAndId() throws {
        try Fixtures.requireRoot()
        // No --rootfs: rootfs/build.sh assembles (or finds in its cache) the default tree.
        let result = try tether(["run", "--name", "first", "--", "sh", "-c", "uname -a; id; cat /proc/1/comm; hostname"])
        defer { cleanUp(["first"]) }
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 4, "stdout: \(result.stdout)")
        #expect(lines.first?.hasPrefix("Linux first ") == true, "uname -a: \(lines.first ?? "")")
        #expect(lines.dropFirst().first?.hasPrefix("uid=0(root) gid=0(root)") == true)
        #expect(lines.dropFirst(2).first == "tether-agent")
        #expect(lines.last == "first")
        // The tree it used is remembered, and it carries the agent.
        let recorded = try String(contentsOf: home.appendingPathComponent("default-rootfs"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(FileManager.default.isExecutableFile(atPath: recorded + "/sbin/tether-agent"))
        // run stopped the sandbox: nothing of it runs any more.
        let entry = sandboxes.entry("first")
        #expect(!entry.isLive)
        #expect(entry.state?.status == .stopped)
        #expect(!Fixtures.isRunning(entry.state?.supervisorPid))
        #expect(!Fixtures.isRunning(entry.state?.sandboxPid))

        // boot without --rootfs boots the same default tree.
        let boot = try tether(["boot", "--name", "second"])
        defer { cleanUp(["second"]) }
        #expect(boot.status == 0, "stderr: \(boot.stderr)")
        #expect(sandboxes.entry("second").state?.rootfs == recorded)
        #expect(try tether(["exec", "--sandbox", "second", "--", "cat", "/proc/1/comm"]).stdout == "tether-agent\n")
        #expect(try tether(["stop", "second"]).status == 0)
    }

    @Test(.timeLimit(.minutes(5)))
    func runReturnsTheCommandsExitStatusAndSpawnFailures() throws {
        try Fixtures.requireRoot()
        let rootfs = try Fixtures.busyboxRootfs()
        let failing = try tether(["run", "--rootfs", rootfs, "--", "sh", "-c", "echo out; echo err >&2; exit 7"])
        #expect(failing.status == 7)
        #expect(failing.stdout == "out\n")
        #expect(failing.stderr.contains("err\n"))
        let missing = try tether(["run", "--rootfs", rootfs, "--", "no-such-program"])
        #expect(missing.status == 127, "stderr: \(missing.stderr)")
        // Neither left a sandbox running.
        let live = sandboxes.list().filter(\.isLive).map(\.name)
        #expect(live.isEmpty, "still running: \(live)")
        cleanUp(live)
    }

    @Test(.timeLimit(.minutes(5)))
    func bootThenExecThroughTheSandboxesRelayThenStop() throws {
        try Fixtures.requireRoot()
        let rootfs = try Fixtures.busyboxRootfs()
        defer { cleanUp(["cli"]) }
        let boot = try tether(["boot", "--rootfs", rootfs, "--name", "cli"])
        #expect(boot.status == 0, "stderr: \(boot.stderr)")
        #expect(boot.stdout.hasPrefix("sandbox cli is running (namespace, pid "))
        let state = try #require(sandboxes.entry("cli").state)
        #expect(Fixtures.isRunning(state.relayPid))

        let id = try tether(["exec", "--sandbox", "cli", "--", "id"])
        #expect(id.status == 0, "stderr: \(id.stderr)")
        #expect(id.stdout.hasPrefix("uid=0(root) gid=0(root)"))
        let user = try tether(["exec", "--sandbox", "cli", "-u", "sandbox", "--", "id"])
        #expect(user.stdout.hasPrefix("uid=1000(sandbox) gid=1000(sandbox)"), "\(user.stdout)\(user.stderr)")
        // The agent is PID 1 and ps in the guest shows it.
        let ps = try tether(["exec", "--sandbox", "cli", "--", "ps", "-o", "pid,args"])
        let pid1 = ps.stdout.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("1 ") }
        #expect(pid1?.contains("tether-agent") == true, "ps in the guest:\n\(ps.stdout)")
        // The relay writes exec.log beside its socket; logs --sandbox reads it there.
        let logs = try tether(["logs", "--sandbox", "cli"])
        #expect(logs.status == 0, "stderr: \(logs.stderr)")
        #expect(logs.stdout.contains("uid=1000(sandbox)"))

        let list = try tether(["ls"])
        let row = list.stdout.split(separator: "\n").first { $0.hasPrefix("cli ") }.map(String.init) ?? ""
        #expect(row.split(separator: " ", omittingEmptySubsequences: true).prefix(3) == ["cli", "running", "namespace"], "ls:\n\(list.stdout)")

        let stop = try tether(["stop", "cli", "--grace", "5s"])
        #expect(stop.status == 0, "stderr: \(stop.stderr)")
        #expect(stop.stdout.hasPrefix("sandbox cli stopped"))
        #expect(!Fixtures.isRunning(state.relayPid))
        #expect(!Fixtures.isRunning(state.supervisorPid))
        let after = try tether(["exec", "--sandbox", "cli", "--", "id"])
        #expect(after.status == 125)
        #expect(after.stderr.contains("sandbox cli is not running"), "stderr: \(after.stderr)")
        let listAfter = try tether(["ls"])
        #expect(listAfter.stdout.contains("cli   stopped") || listAfter.stdout.contains("cli  stopped"), "ls:\n\(listAfter.stdout)")
        let again = try tether(["stop", "cli"])
        #expect(again.status == 1)
    }

    @Test(.timeLimit(.minutes(5)))
    func aNameConflictIsAnErrorSuggestingReplaceAndReplaceStopsTheOldOne() throws {
        try Fixtures.requireRoot()
        let rootfs = try Fixtures.busyboxRootfs()
        defer { cleanUp(["dup"]) }
        let first = try tether(["boot", "--rootfs", rootfs, "--name", "dup"])
        #expect(first.status == 0, "stderr: \(first.stderr)")
        let old = try #require(sandboxes.entry("dup").state)

        let conflict = try tether(["boot", "--rootfs", rootfs, "--name", "dup"])
        #expect(conflict.status == 1)
        #expect(conflict.stderr.hasPrefix("tether: boot: a sandbox named 'dup' is already running (supervisor pid \(old.supervisorPid))\n"),
                "stderr: \(conflict.stderr)")
        #expect(conflict.stderr.contains("  -> use --replace"), "stderr: \(conflict.stderr)")
        // The same as one JSON object, for scripts.
        let json = try tether(["boot", "--json", "--rootfs", rootfs, "--name", "dup"])
        #expect(json.status == 1)
        let fields = try JSONSerialization.jsonObject(with: Data(json.stderr.utf8)) as? [String: Any]
        #expect(fields?["code"] as? String == "nameConflict", "stderr: \(json.stderr)")
        #expect((fields?["context"] as? [String: String]) == ["name": "dup", "pid": String(old.supervisorPid)])
        #expect(fields?["operation"] as? String == "boot")
        #expect(fields?["suggestion"] is String && fields?["message"] is String && fields?["timestamp"] is String)
        #expect(Fixtures.isRunning(old.supervisorPid), "a refused boot must not touch the running sandbox")
        let stillServed = try tether(["exec", "--sandbox", "dup", "--", "echo", "still here"])
        #expect(stillServed.stdout == "still here\n")

        let replaced = try tether(["boot", "--rootfs", rootfs, "--name", "dup", "--replace", "--replace-grace", "2s"])
        #expect(replaced.status == 0, "stderr: \(replaced.stderr)")
        let new = try #require(sandboxes.entry("dup").state)
        #expect(new.supervisorPid != old.supervisorPid)
        #expect(!Fixtures.isRunning(old.supervisorPid))
        #expect(!Fixtures.isRunning(old.sandboxPid))
        #expect(!Fixtures.isRunning(old.relayPid))
        let served = try tether(["exec", "--sandbox", "dup", "--", "echo", "new one"])
        #expect(served.stdout == "new one\n", "stderr: \(served.stderr)")
        #expect(try tether(["stop", "dup"]).status == 0)
    }

    @Test(.timeLimit(.minutes(5)))
    func unknownSandboxAndBadArgumentsAreErrorsNotHangs() throws {
        let exec = try tether(["exec", "--sandbox", "nosuch", "--", "id"])
        #expect(exec.status == 125)
        #expect(exec.stderr.contains("sandbox nosuch is not running"), "stderr: \(exec.stderr)")
        let stop = try tether(["stop", "nosuch"])
        #expect(stop.status == 1)
        let noCommand = try tether(["run", "--rootfs", "/nonexistent"])
        #expect(noCommand.status == 2)
        #expect(noCommand.stderr.contains("no command to run"))
        let badRootfs = try tether(["run", "--rootfs", "/nonexistent", "--", "true"])
        #expect(badRootfs.status == 1)
        #expect(badRootfs.stderr.contains("stage rootfs"), "stderr: \(badRootfs.stderr)")
    }

    @Test(.timeLimit(.minutes(5)))
    func aRootfsWithoutTheAgentIsAnErrorBlockWithStageAndErrno() throws {
        try Fixtures.requireRoot()
        let boot = try tether(["boot", "--rootfs", try Fixtures.rootfsWithoutAgent(), "--name", "noagent"])
        defer { cleanUp(["noagent"]) }
        #expect(boot.status == 1)
        #expect(boot.stderr.hasPrefix("tether: boot: the sandbox did not boot (stage agent-exec): the agent /sbin/tether-agent is not in the rootfs "),
                "stderr: \(boot.stderr)")
        // The errno once, not twice.
        #expect(boot.stderr.components(separatedBy: "ENOENT").count == 2, "stderr: \(boot.stderr)")
        #expect(boot.stderr.contains("\n  -> "), "no hint line: \(boot.stderr)")
        // --json: one object, with boot-error.json's stage and errno.
        let json = try tether(["boot", "--json", "--rootfs", "/no/such/rootfs", "--name", "norootfs"])
        #expect(json.status == 1)
        #expect(json.stderr.split(separator: "\n").count == 1, "stderr: \(json.stderr)")
        let fields = try JSONSerialization.jsonObject(with: Data(json.stderr.utf8)) as? [String: Any]
        #expect(fields?["code"] as? String == "bootFailed", "stderr: \(json.stderr)")
        #expect((fields?["context"] as? [String: String])?["stage"] == "rootfs")
        #expect(fields?["errno"] as? Int == Int(ENOENT))
        #expect((fields?["message"] as? String)?.contains("/no/such/rootfs") == true)
        #expect(fields?["operation"] as? String == "boot" && fields?["timestamp"] is String && fields?.keys.contains("suggestion") == true)
        let recorded = try #require(BootFailure.read(from: sandboxes.home.sandbox("noagent").bootError))
        #expect(recorded.stage == .agentExec && recorded.errno == ENOENT)
        #expect(!sandboxes.entry("noagent").isLive)
    }

    @Test(.timeLimit(.minutes(5)))
    func krunWithoutLibkrunNamesThePackageAndTheNamespaceBackend() throws {
        try Fixtures.requireRoot()
        let boot = try tether(["boot", "--backend", "krun", "--rootfs", try Fixtures.busyboxRootfs(), "--name", "nokrun"],
                              extra: ["TETHER_LIBKRUN": "/no/such/libkrun.so.1"])
        defer { cleanUp(["nokrun"]) }
        #expect(boot.status == 1)
        #expect(boot.stderr.contains("stage krun-load"), "stderr: \(boot.stderr)")
        #expect(boot.stderr.contains("libkrunfw"))
        #expect(boot.stderr.contains("--backend namespace"))
    }

    @Test(.timeLimit(.minutes(5)))
    func krunThroughTheStubServesExecThroughTheRelay() throws {
        try Fixtures.requireRoot()
        let stub = try KrunBackendTests.buildStub("cli")
        let libkrun = ["TETHER_LIBKRUN": stub.appendingPathComponent("libkrun.so.1").path]
        let rootfs = try Fixtures.busyboxRootfs()
        defer { cleanUp(["vmcli"]) }
        let boot = try tether(["boot", "--backend", "krun", "--cpus", "2", "--memory", "256", "--rootfs", rootfs, "--name", "vmcli"],
                              extra: libkrun)
        #expect(boot.status == 0, "stderr: \(boot.stderr)")
        #expect(boot.stdout.hasPrefix("sandbox vmcli is running (krun, pid "))
        let hostname = try tether(["exec", "--sandbox", "vmcli", "--", "hostname"])
        #expect(hostname.stdout == "vmcli\n", "stderr: \(hostname.stderr)")
        #expect(try tether(["stop", "vmcli", "--grace", "2s"]).status == 0)
        let calls = KrunBackendTests.calls(in: stub)
        #expect(calls.contains("krun_set_vm_config(0, 2, 256) = 0"), "calls: \(calls)")
        #expect(calls.last == "guest ended: status 0", "calls: \(calls)")
    }

    @Test(.timeLimit(.minutes(5)))
    func initHandOffThroughTheCLIPowersOffOnStop() throws {
        try Fixtures.requireRoot()
        let rootfs = try Fixtures.busyboxRootfs()
        defer { cleanUp(["bbcli"]) }
        let boot = try tether(["boot", "--rootfs", rootfs, "--name", "bbcli", "--init", "/sbin/init"])
        #expect(boot.status == 0, "stderr: \(boot.stderr)")
        let comm = try tether(["exec", "--sandbox", "bbcli", "--", "cat", "/proc/1/comm"])
        #expect(comm.stdout == "init\n", "stderr: \(comm.stderr)")
        // The relay holds the agent's one connection until stop ends it, then the supervisor's
        // shutdown request reaches the agent, which asks busybox init to power off (SIGUSR2).
        let stop = try tether(["stop", "bbcli", "--grace", "5s"])
        #expect(stop.stdout == "sandbox bbcli stopped: powered off\n", "stderr: \(stop.stderr)")
    }

    @Test(.timeLimit(.minutes(5)))
    func aRelayThatDiesIsReplacedAndAdoptsDetachedSessions() throws {
        try Fixtures.requireRoot()
        defer { cleanUp(["respawn"]) }
        let boot = try tether(["boot", "--rootfs", try Fixtures.busyboxRootfs(), "--name", "respawn"])
        #expect(boot.status == 0, "stderr: \(boot.stderr)")
        let detached = try tether(["exec", "--sandbox", "respawn", "--detach", "--", "sleep", "120"])
        #expect(detached.status == 0, "stderr: \(detached.stderr)")
        let first = try #require(sandboxes.entry("respawn").state?.relayPid)
        kill(first, SIGKILL)
        // The supervisor starts another relay, which finds the agent's detached session.
        var replacement: Int32?
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let pid = sandboxes.entry("respawn").state?.relayPid, pid != first, Fixtures.isRunning(pid) {
                replacement = pid
                break
            }
            usleep(50_000)
        }
        #expect(replacement != nil, "no new relay; supervisor.log: \((try? String(contentsOf: sandboxes.home.sandbox("respawn").supervisorLog, encoding: .utf8)) ?? "")")
        let ps = try tether(["ps", "--sandbox", "respawn"])
        #expect(ps.stdout.contains("sleep 120"), "ps: \(ps.stdout)\(ps.stderr)")
        #expect(try tether(["exec", "--sandbox", "respawn", "--", "echo", "served"]).stdout == "served\n")
        #expect(try tether(["stop", "respawn", "--grace", "2s"]).status == 0)
        #expect(!Fixtures.isRunning(replacement))
    }
}
