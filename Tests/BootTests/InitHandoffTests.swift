#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TestSupport
import TetherBoot
import Testing

/// `--init`: the agent hands PID 1 to a real init from a Debian tree (systemd, OpenRC) or to
/// busybox init, keeps serving from a child, and `stop` makes that init power off in its own
/// language. Namespace backend; the Debian trees come from rootfs/debootstrap.sh (built once,
/// about a minute each, then cached).
@Suite(.serialized) struct InitHandoffTests {
    let sandboxes = Sandboxes(home: TetherHome(root: Fixtures.temporaryDirectory("init")),
                              supervisorExecutable: Binaries.product("tether-sandbox").path)

    func requireDebootstrap() throws {
        if !FileManager.default.isExecutableFile(atPath: "/usr/sbin/debootstrap") {
            try Test.cancel("debootstrap is not installed (scripts/deps.sh installs it)")
        }
    }

    /// The cgroups directly under this process's cgroup in every cgroup v1 hierarchy: an init
    /// in the sandbox must never create its tree there (that is the host's). Other sandboxes'
    /// `tether-NAME-PID` directories are left out: tests running beside this one boot them.
    func hostV1Cgroups(own: String = "tether-systemd-") -> Set<String> {
        guard let mountinfo = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        var result: Set<String> = []
        for line in mountinfo.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2, halves[1].hasPrefix("cgroup ") else { continue }
            let fields = halves[0].split(separator: " ")
            guard fields.count > 4 else { continue }
            let mount = String(fields[4])
            for child in (try? FileManager.default.contentsOfDirectory(atPath: mount)) ?? [] {
                var isDirectory: ObjCBool = false
                if child.hasPrefix("tether-") && !child.hasPrefix(own) { continue }
                if FileManager.default.fileExists(atPath: mount + "/" + child, isDirectory: &isDirectory), isDirectory.boolValue {
                    result.insert(mount + "/" + child)
                }
            }
        }
        return result
    }

    @Test(.timeLimit(.minutes(10)))
    func systemdIsPID1AndPowersOffOnStop() throws {
        try Fixtures.requireRoot()
        try requireDebootstrap()
        let rootfs = try Fixtures.debianRootfs("systemd")
        let before = hostV1Cgroups()
        let state = try sandboxes.boot(SandboxConfig(name: "systemd", rootfs: rootfs, initSystem: "auto",
                                                     handshakeTimeoutMs: 60_000))
        var link: AgentLink? = try AgentLink(socketPath: state.agentSocket)
        // Not readlink /proc/1/exe: that needs ptrace access to PID 1, which a command bounded
        // to the default capabilities does not have to an init that holds more. PID 1 runs
        // /sbin/init (comm "init" until systemd renames itself "systemd"), which is systemd.
        let comm = try link!.exec(["cat", "/proc/1/comm"]).stdout
        #expect(comm == "systemd\n" || comm == "init\n", "\(comm)")
        #expect(try link!.exec(["readlink", "-f", "/sbin/init"]).stdout.hasSuffix("/systemd/systemd\n"))
        // systemd finished booting (a unit that cannot work in a container makes it "degraded";
        // the failed ones are listed in the message). systemctl needs systemd's private socket,
        // which appears a little after the agent's hello.
        let running = try link!.exec(["sh", "-c", "while [ ! -S /run/systemd/private ]; do sleep 0.05; done; systemctl is-system-running --wait"],
                                     timeoutMs: 120_000)
        let failed = try link!.exec(["systemctl", "--failed", "--no-legend", "--plain"]).stdout
        #expect(running.stdout == "running\n", "systemd: \(running.stdout)\(running.stderr) failed units: \(failed)")
        // While it runs, its tree (init.scope, system.slice, ...) is inside the sandbox's own
        // cgroup, not beside it in the host's.
        #expect(hostV1Cgroups().filter { !$0.contains("/tether-systemd-") } == before)
        // exec still works through the agent, which is not PID 1 any more.
        let ps = try link!.exec(["ps", "-e", "-o", "pid=,comm="])
        #expect(ps.stdout.contains("tether-agent"))
        #expect(!ps.stdout.split(separator: "\n").contains { $0.trimmingCharacters(in: .whitespaces) == "1 tether-agent" })
        #expect(try link!.exec(["id", "-un"], user: "sandbox").stdout == "sandbox\n")
        link = nil   // as a relay would be stopped: the supervisor's shutdown request goes in

        let outcome = try sandboxes.stop("systemd", graceMs: 15_000)
        #expect(outcome == .stopped(exit: "powered off"))
        #expect(!sandboxes.entry("systemd").isLive)
        #expect(hostV1Cgroups() == before, "systemd in the sandbox created cgroups in the host's v1 hierarchies")
    }

    @Test(.timeLimit(.minutes(10)))
    func openrcInitIsPID1AndPowersOffOnStop() throws {
        try Fixtures.requireRoot()
        try requireDebootstrap()
        let rootfs = try Fixtures.debianRootfs("openrc")
        let state = try sandboxes.boot(SandboxConfig(name: "openrc", rootfs: rootfs, initSystem: "/sbin/openrc-init",
                                                     handshakeTimeoutMs: 60_000))
        var link: AgentLink? = try AgentLink(socketPath: state.agentSocket)
        #expect(try link!.exec(["cat", "/proc/1/comm"]).stdout == "openrc-init\n")
        #expect(try link!.exec(["id", "-un"], user: "sandbox").stdout == "sandbox\n")
        // openrc-init creates its control FIFO once the default runlevel is up.
        let runlevel = try link!.exec(["sh", "-c", "while [ ! -p /run/openrc/init.ctl ]; do sleep 0.05; done; rc-status --runlevel"],
                                      timeoutMs: 120_000)
        #expect(runlevel.stdout == "default\n", "\(runlevel.stdout)\(runlevel.stderr)")
        link = nil
        // openrc-init takes `poweroff` on its control FIFO: it runs the shutdown runlevel, sends
        // the final TERM, waits 3 s, KILLs, and powers off.
        let outcome = try sandboxes.stop("openrc", graceMs: 15_000)
        #expect(outcome == .stopped(exit: "powered off"))
    }

    @Test(.timeLimit(.minutes(5)))
    func busyboxInitIsPID1AndPowersOffOnStop() throws {
        try Fixtures.requireRoot()
        let state = try sandboxes.boot(SandboxConfig(name: "bbinit", rootfs: try Fixtures.busyboxRootfs(), initSystem: "/sbin/init"))
        // This client stays connected through the stop: the supervisor then reaches the agent
        // with SIGTERM instead of a shutdown frame.
        let link = try AgentLink(socketPath: state.agentSocket)
        #expect(try link.exec(["cat", "/proc/1/comm"]).stdout == "init\n")
        #expect(try link.exec(["echo", "still served"]).stdout == "still served\n")
        let outcome = try sandboxes.stop("bbinit", graceMs: 5_000)
        #expect(outcome == .stopped(exit: "powered off"))
    }
}
