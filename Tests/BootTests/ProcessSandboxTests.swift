#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TestSupport
import TetherBoot
import Testing

/// Named background processes in a real sandbox (the namespace backend, the bundled busybox
/// tree, the static agent as PID 1), through `tether start --sandbox` and `tether proc`:
/// busybox httpd ready when start returns, and a process and its log surviving the sandbox's
/// relay being killed (the supervisor starts a new one, which adopts it).
@Suite(.serialized) struct ProcessSandboxTests {
    let home = Fixtures.temporaryDirectory("proc")

    func tether(_ arguments: [String]) throws -> Fixtures.Output {
        try Fixtures.tether(arguments, home: home)
    }

    var sandboxes: Sandboxes { Fixtures.sandboxes(home: home) }

    @Test(.timeLimit(.minutes(5)))
    func httpdReadyAtOnceAndItsLogSurvivesTheRelayBeingKilled() throws {
        try Fixtures.requireRoot()
        let rootfs = try Fixtures.busyboxRootfs()
        defer { if sandboxes.entry("procs").isLive { _ = try? sandboxes.stop("procs", graceMs: 1_000) } }
        let boot = try tether(["boot", "--rootfs", rootfs, "--name", "procs"])
        #expect(boot.status == 0, "stderr: \(boot.stderr)")
        _ = try tether(["exec", "--sandbox", "procs", "--", "sh", "-c", "mkdir -p /tmp/www && echo hello from the sandbox > /tmp/www/index.html"])

        // busybox httpd in the guest; when start returns, the guest's wget gets the page at once.
        let start = try tether(["start", "--sandbox", "procs", "--name", "web", "--wait-port", "8080", "--",
                                "httpd", "-f", "-v", "-p", "8080", "-h", "/tmp/www"])
        #expect(start.status == 0 && start.stdout == "web\n", "stderr: \(start.stderr)")
        let page = try tether(["exec", "--sandbox", "procs", "--", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"])
        #expect(page.status == 0 && page.stdout == "hello from the sandbox\n", "\(page.stdout)\(page.stderr)")

        // Exit 3 before listening: the error, the code and the output's tail.
        let bad = try tether(["start", "--sandbox", "procs", "--name", "bad", "--wait-port", "8081", "--",
                              "sh", "-c", "echo cannot bind >&2; exit 3"])
        #expect(bad.status == 1 && bad.stderr.contains("exited with code 3 before it was ready"), "\(bad.stderr)")
        #expect(bad.stderr.contains("  | cannot bind"), "\(bad.stderr)")

        // The relay dies; the supervisor starts another, which finds the process in the agent.
        let state = try #require(sandboxes.entry("procs").state)
        let oldRelay = try #require(state.relayPid)
        #expect(kill(oldRelay, SIGKILL) == 0)
        var newRelay: Int32 = oldRelay
        for _ in 0..<200 where newRelay == oldRelay || newRelay == 0 {
            usleep(50_000)
            newRelay = sandboxes.entry("procs").state?.relayPid ?? 0
        }
        #expect(newRelay != oldRelay && newRelay != 0, "no new relay")
        var list = try tether(["proc", "ls", "--sandbox", "procs"])
        for _ in 0..<100 where list.status != 0 {
            usleep(100_000)   // the new relay may still be connecting to its agent
            list = try tether(["proc", "ls", "--sandbox", "procs"])
        }
        let web = list.stdout.split(separator: "\n").first { $0.hasPrefix("web ") }.map { $0.split(separator: " ", omittingEmptySubsequences: true) }
        #expect(web?.dropFirst(3).first == "ready", "proc ls:\n\(list.stdout)\(list.stderr)")
        // httpd -v logged the request made before the relay died (on stderr); the log still has it.
        let logs = try tether(["proc", "logs", "--sandbox", "procs", "web"])
        #expect(logs.status == 0 && logs.stderr.contains("127.0.0.1]:") && logs.stderr.contains("response:200"),
                "stdout: \(logs.stdout) stderr: \(logs.stderr)")
        let again = try tether(["exec", "--sandbox", "procs", "--", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"])
        #expect(again.stdout == "hello from the sandbox\n")

        #expect(try tether(["proc", "kill", "--sandbox", "procs", "web"]).status == 0)
        let wait = try tether(["proc", "wait", "--sandbox", "procs", "web"])
        #expect(wait.stdout == "web killed (signal 15)\n", "\(wait.stdout)\(wait.stderr)")
        #expect(try tether(["stop", "procs"]).status == 0)
    }
}
