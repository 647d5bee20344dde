#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TestSupport
import TetherBoot
import TetherPosix
import TetherProtocol
import Testing

/// Sandboxes booted with the namespace backend through the real supervisor (tether-sandbox) and
/// the real static agent as PID 1, driven over the agent's socket.
@Suite(.serialized) struct NamespaceSandboxTests {
    let sandboxes: Sandboxes

    init() {
        sandboxes = Sandboxes(home: TetherHome(root: Fixtures.temporaryDirectory("ns")),
                              supervisorExecutable: Binaries.product("tether-sandbox").path)
    }

    func config(_ name: String, rootfs: String? = nil, configure: (inout SandboxConfig) -> Void = { _ in }) throws -> SandboxConfig {
        var config = SandboxConfig(name: name, rootfs: try rootfs ?? Fixtures.busyboxRootfs())
        configure(&config)
        return config
    }

    @Test(.timeLimit(.minutes(5)))
    func bootExecStop() throws {
        try Fixtures.requireRoot()
        let state = try sandboxes.boot(try config("basic"))
        #expect(state.status == .running)
        #expect(state.bootToHelloMs != nil)
        #expect(sandboxes.entry("basic").isLive)

        let link = try AgentLink(socketPath: state.agentSocket)
        #expect(link.hello?.role == .agent)
        // The agent is PID 1 and `ps` in the guest shows it (and nothing of the host).
        let ps = try link.exec(["ps", "-o", "pid,args"])
        #expect(ps.exited?.code == 0)
        let pid1 = ps.stdout.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("1 ") }
        #expect(pid1?.contains("tether-agent") == true, "ps in the guest:\n\(ps.stdout)")
        #expect(ps.stdout.split(separator: "\n").count < 10, "ps in the guest:\n\(ps.stdout)")
        let hostname = try link.exec(["hostname"])
        #expect(hostname.stdout == "basic\n")
        let id = try link.exec(["id"], user: "sandbox")
        #expect(id.stdout.hasPrefix("uid=1000(sandbox) gid=1000(sandbox)"), "\(id.stdout)\(id.stderr)")

        // An idle sandbox costs no CPU: the supervisor sleeps in poll(2) until the sandbox ends
        // or a stop arrives (it once spun on poll(0) and burnt a core per sandbox).
        let supervisorTicks = { Int((try? ProcessHandle.cpuTicks(of: state.supervisorPid)) ?? 0) }
        let before = supervisorTicks()
        usleep(1_000_000)
        let spent = supervisorTicks() - before
        #expect(spent <= 10, "the idle supervisor used \(spent) of 100 clock ticks in a second")

        let outcome = try sandboxes.stop("basic", graceMs: 2_000)
        guard case .stopped(let exit) = outcome else { Issue.record("stop: \(outcome)"); return }
        #expect(exit != nil)
        let after = sandboxes.entry("basic")
        #expect(!after.isLive)
        #expect(after.state?.status == .stopped)
        #expect(!FileManager.default.fileExists(atPath: state.agentSocket))
        #expect(!Fixtures.isRunning(state.sandboxPid))
        #expect(!Fixtures.isRunning(state.supervisorPid))
    }

    @Test(.timeLimit(.minutes(5)))
    func nameConflictIsATypedErrorAndReplaceStopsTheOldOne() throws {
        try Fixtures.requireRoot()
        let first = try sandboxes.boot(try config("dup"))
        #expect(throws: SandboxError.nameConflict(name: "dup", pid: first.supervisorPid)) {
            _ = try sandboxes.boot(try config("dup"))
        }
        #expect(SandboxError.nameConflict(name: "dup", pid: nil).hint?.contains("--replace") == true)
        // The first one is untouched by the refused boot.
        #expect(try AgentLink(socketPath: first.agentSocket).exec(["true"]).exited?.code == 0)

        let second = try sandboxes.boot(try config("dup"), onConflict: .replace(graceMs: 1_000))
        #expect(second.supervisorPid != first.supervisorPid)
        #expect(!Fixtures.isRunning(first.supervisorPid))
        #expect(!Fixtures.isRunning(first.sandboxPid))
        #expect(try AgentLink(socketPath: second.agentSocket).exec(["echo", "new"]).stdout == "new\n")
        try sandboxes.stop("dup", graceMs: 1_000)
    }

    @Test(.timeLimit(.minutes(5)))
    func rootfsWithoutTheAgentIsABootErrorWithStageAndErrno() throws {
        try Fixtures.requireRoot()
        let config = try config("noagent", rootfs: try Fixtures.rootfsWithoutAgent())
        do {
            _ = try sandboxes.boot(config)
            Issue.record("booted without an agent")
        } catch {
            guard case .bootFailed(let failure) = error else { Issue.record("\(error)"); return }
            #expect(failure.stage == .agentExec)
            #expect(failure.errno == ENOENT)
            #expect(failure.message.contains("/sbin/tether-agent"))
            #expect(failure.hint != nil)
            #expect(BootFailure.read(from: sandboxes.home.sandbox("noagent").bootError) == failure)
        }
        #expect(!sandboxes.entry("noagent").isLive)
        #expect(sandboxes.entry("noagent").state?.status == .failed)
    }

    @Test(.timeLimit(.minutes(5)))
    func silentFirstProcessHitsTheHandshakeDeadline() throws {
        try Fixtures.requireRoot()
        // busybox init as the "agent": a real PID 1 that never speaks the protocol.
        let config = try config("silent") {
            $0.agentPath = "/sbin/init"
            $0.handshakeTimeoutMs = 1_500
        }
        #expect {
            _ = try sandboxes.boot(config)
        } throws: { error in
            guard case .bootFailed(let failure) = error as? SandboxError else { return false }
            return failure.stage == .handshake && failure.errno == ETIMEDOUT
        }
        #expect(!sandboxes.entry("silent").isLive)
        // The supervisor killed it: nothing of it is left.
        #expect(!Fixtures.isRunning(sandboxes.entry("silent").state?.sandboxPid))
    }

    @Test(.timeLimit(.minutes(5)))
    func ephemeralSandboxLeavesTheRootfsUntouched() throws {
        try Fixtures.requireRoot()
        let state = try sandboxes.boot(try config("eph") { $0.ephemeral = true })
        let link = try AgentLink(socketPath: state.agentSocket)
        #expect(try link.exec(["sh", "-c", "echo hi > /etc/ephemeral-test && cat /etc/ephemeral-test"]).stdout == "hi\n")
        try sandboxes.stop("eph", graceMs: 1_000)
        #expect(!FileManager.default.fileExists(atPath: state.rootfs + "/etc/ephemeral-test"))
        #expect(!FileManager.default.fileExists(atPath: sandboxes.home.sandbox("eph").overlay.path))
    }

    @Test(.timeLimit(.minutes(5)))
    func networkNoneHasOnlyLoopback() throws {
        try Fixtures.requireRoot()
        let state = try sandboxes.boot(try config("nonet") { $0.network = .none })
        let links = try AgentLink(socketPath: state.agentSocket).exec(["ip", "-o", "link"])
        #expect(links.stdout.split(separator: "\n").count == 1 && links.stdout.contains("lo:"), "\(links.stdout)")
        try sandboxes.stop("nonet", graceMs: 1_000)
    }

    @Test(.timeLimit(.minutes(5)))
    func limitsApplyThroughCgroupsOrWarn() throws {
        try Fixtures.requireRoot()
        let state = try sandboxes.boot(try config("limits") { $0.memoryMiB = 256; $0.cpus = 1 })
        defer { _ = try? sandboxes.stop("limits", graceMs: 1_000) }
        // The sandbox's own cgroup, read from the host (guest commands cannot mount a cgroup
        // file system: no CAP_SYS_ADMIN, and the default seccomp profile): the limit is there
        // (v2 memory.max, or v1 memory.limit_in_bytes on a hybrid host), or a warning says why not.
        let pid = try #require(state.sandboxPid)
        let membership = try String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8)
        var seen = ""
        for line in membership.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 3 else { continue }
            let files = fields[0] == "0" ? ["/sys/fs/cgroup/unified\(fields[2])/memory.max", "/sys/fs/cgroup\(fields[2])/memory.max"]
                : fields[1].split(separator: ",").contains("memory") ? ["/sys/fs/cgroup/memory\(fields[2])/memory.limit_in_bytes"] : []
            for file in files { seen += (try? String(contentsOfFile: file, encoding: .utf8)) ?? "" }
        }
        let applied = seen.split(separator: "\n").contains("268435456")
        #expect(applied || state.warnings.contains { $0.hasPrefix("--memory 256 was not applied") },
                "the sandbox's cgroup has \(seen); warnings: \(state.warnings)")
        #expect(!applied || !state.warnings.contains { $0.hasPrefix("--memory") })
    }

    @Test(.timeLimit(.minutes(5)))
    func listShowsLiveAndEndedSandboxes() throws {
        try Fixtures.requireRoot()
        _ = try sandboxes.boot(try config("listed-a"))
        _ = try sandboxes.boot(try config("listed-b"))
        try sandboxes.stop("listed-b", graceMs: 1_000)
        let entries = Dictionary(uniqueKeysWithValues: sandboxes.list().map { ($0.name, $0) })
        #expect(entries["listed-a"]?.isLive == true)
        #expect(entries["listed-a"]?.state?.status == .running)
        #expect(entries["listed-b"]?.isLive == false)
        #expect(entries["listed-b"]?.state?.status == .stopped)
        #expect(throws: SandboxError.notRunning(name: "listed-b")) { try sandboxes.stop("listed-b") }
        try sandboxes.stop("listed-a", graceMs: 1_000)
    }
}
