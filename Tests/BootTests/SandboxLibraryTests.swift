#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TestSupport
import TetherSandbox
import Testing

/// The `Sandbox` library as a Swift program uses it: boot by name, exec, stop, and the typed
/// errors a caller branches on. Each test has its own `$TETHER_HOME`; the tools are the ones
/// built beside the test bundle.
@Suite(.serialized) struct SandboxLibraryTests {
    let home = Fixtures.temporaryDirectory("lib")

    func options(_ name: String?, rootfs: String) -> SandboxOptions {
        var options = SandboxOptions(name: name, rootfs: .directory(rootfs), home: TetherHome(root: home),
                                     toolsDirectory: Binaries.product("tether").deletingLastPathComponent().path)
        options.config.handshakeTimeoutMs = 20_000
        return options
    }

    func cleanUp(_ names: [String]) {
        let sandboxes = options(nil, rootfs: "/").sandboxes
        for name in names where sandboxes.entry(name).isLive { _ = try? sandboxes.stop(name, graceMs: 1_000) }
    }

    @Test(.timeLimit(.minutes(5)))
    func withSandboxBootsExecsAndAlwaysStops() async throws {
        try Fixtures.requireRoot()
        let rootfs = try Fixtures.busyboxRootfs()
        defer { cleanUp(["lib-scope"]) }
        let (state, output, hostname) = try await withSandbox(options("lib-scope", rootfs: rootfs)) { sandbox in
            #expect(sandbox.name == "lib-scope")
            #expect(Fixtures.isRunning(sandbox.state.supervisorPid))
            let output = try await sandbox.shell("echo out; echo err >&2; exit 3")
            let hostname = try await sandbox.exec(["hostname"]).stdoutText
            // Files, ports and processes are the sandbox's too.
            try await sandbox.files.write("/tmp/from-library", Array("written\n".utf8))
            #expect(try await sandbox.shell("cat /tmp/from-library").stdoutText == "written\n")
            #expect(try await sandbox.files.read("/tmp/from-library") == Array("written\n".utf8))
            #expect(try await sandbox.ports.list().isEmpty)
            #expect(try await sandbox.processes.list().isEmpty)
            return (sandbox.state, output, hostname)
        }
        #expect(output.exitCode == 3)
        #expect(output.stdoutText == "out\n" && output.stderrText == "err\n")
        #expect(hostname == "lib-scope\n")
        // Stopped on the way out: nothing of it runs, and a named sandbox keeps its state.
        let entry = options(nil, rootfs: rootfs).sandboxes.entry("lib-scope")
        #expect(!entry.isLive)
        #expect(entry.state?.status == .stopped)
        #expect(!Fixtures.isRunning(state.supervisorPid) && !Fixtures.isRunning(state.sandboxPid) && !Fixtures.isRunning(state.relayPid))

        // A body that throws stops it too, and its error is the one that comes out.
        struct Planned: Error {}
        var booted: SandboxState?
        await #expect(throws: Planned.self) {
            try await withSandbox(options(nil, rootfs: rootfs)) { sandbox in
                booted = sandbox.state
                throw Planned()
            }
        }
        let unnamed = try #require(booted)
        #expect(unnamed.name.hasPrefix("run-"))
        #expect(!Fixtures.isRunning(unnamed.supervisorPid) && !Fixtures.isRunning(unnamed.sandboxPid))
        // Nobody named it: nothing of it is left in $TETHER_HOME.
        #expect(!FileManager.default.fileExists(atPath: TetherHome(root: home).sandbox(unnamed.name).directory.path))
    }

    @Test(.timeLimit(.minutes(5)))
    func aTakenNameIsNameConflictWithThePidAndReplaceStopsTheOldOne() async throws {
        try Fixtures.requireRoot()
        let rootfs = try Fixtures.busyboxRootfs()
        defer { cleanUp(["lib-dup"]) }
        let first = try await Sandbox.boot(options("lib-dup", rootfs: rootfs))
        do {
            _ = try await Sandbox.boot(options("lib-dup", rootfs: rootfs))
            Issue.record("a second boot of a running name succeeded")
        } catch {
            guard case .nameConflict(let name, let pid) = error else { Issue.record("\(error)"); return }
            #expect(name == "lib-dup")
            #expect(pid == first.state.supervisorPid)
        }
        // The refused boot left the first one serving.
        #expect(try await first.shell("echo still").stdoutText == "still\n")

        let second = try await Sandbox.replace(options("lib-dup", rootfs: rootfs), grace: .seconds(2))
        #expect(second.state.supervisorPid != first.state.supervisorPid)
        #expect(!Fixtures.isRunning(first.state.supervisorPid))
        #expect(try await second.exec(["echo", "new"]).stdoutText == "new\n")
        let outcome = try await second.stop(grace: .seconds(2))
        #expect(outcome != .killed)
        #expect(!Fixtures.isRunning(second.state.supervisorPid))
    }

    @Test(.timeLimit(.minutes(2)))
    func aMissingRootfsIsBootFailedWithItsStage() async throws {
        try Fixtures.requireRoot()
        do {
            _ = try await Sandbox.boot(options("lib-nowhere", rootfs: "/no/such/rootfs"))
            Issue.record("booted from a missing rootfs")
        } catch {
            guard case .bootFailed(let failure) = error else { Issue.record("\(error)"); return }
            #expect(failure.stage == .rootfs)
            #expect(failure.errno == ENOENT)
            #expect(failure.message.contains("/no/such/rootfs"))
        }
    }
}
