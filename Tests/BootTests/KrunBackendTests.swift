#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TestSupport
import TetherBoot
import Testing

/// The krun backend against the stub libkrun (Stub/libkrun-stub.c), built here with cc: the calls,
/// their order and arguments as the stub recorded them, and the typed errors for a missing
/// library, an old library and a missing libkrunfw.
@Suite(.serialized) struct KrunBackendTests {
    /// Builds the stub as DIR/libkrun.so.1 (its calls.log lands in DIR too).
    static func buildStub(_ label: String, defines: [String] = []) throws -> URL {
        let dir = Fixtures.temporaryDirectory("krun-\(label)")
        let source = Fixtures.repository.appendingPathComponent("Tests/BootTests/Stub/libkrun-stub.c").path
        let library = dir.appendingPathComponent("libkrun.so.1").path
        let result = try Fixtures.run([try Fixtures.cCompiler(), "-shared", "-fPIC", "-O1", "-o", library, source, "-ldl"]
                                      + defines.map { "-D" + $0 })
        guard result.status == 0 else { throw FixtureError.failed("compiling the stub libkrun: \(result.stderr)") }
        return dir
    }

    static func calls(in stub: URL) -> [String] {
        let text = (try? String(contentsOf: stub.appendingPathComponent("calls.log"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map(String.init)
    }

    static func sandboxes(_ label: String) -> Sandboxes {
        Sandboxes(home: TetherHome(root: Fixtures.temporaryDirectory("home-\(label)")),
                  supervisorExecutable: Binaries.product("tether-sandbox").path)
    }

    @Test func missingLibraryIsATypedErrorNamingThePackageAndTheNamespaceBackend() {
        #expect(throws: KrunLoadError.self) { _ = try KrunLibrary.load(explicitPath: "/no/such/libkrun.so.1") }
        do {
            _ = try KrunLibrary.load(explicitPath: "/no/such/libkrun.so.1")
        } catch {
            guard case .libraryNotFound(let tried, _) = error else { Issue.record("\(error)"); return }
            #expect(tried == ["/no/such/libkrun.so.1"])
            #expect(error.errno == ENOENT)
            #expect(error.hint.contains("libkrun") && error.hint.contains("libkrunfw"))
            #expect(error.hint.contains("--backend namespace"))
            #expect(error.bootFailure.stage == .krunLoad)
        }
    }

    @Test(.timeLimit(.minutes(5)))
    func bootWithoutLibkrunWritesAKrunLoadBootError() throws {
        let sandboxes = Self.sandboxes("nolib")
        let config = SandboxConfig(name: "nolib", rootfs: "/", backend: .krun, krunLibrary: "/no/such/libkrun.so.1")
        do {
            _ = try sandboxes.boot(config)
            Issue.record("booted without libkrun")
        } catch {
            guard case .bootFailed(let failure) = error else { Issue.record("\(error)"); return }
            #expect(failure.stage == .krunLoad)
            #expect(failure.errno == ENOENT)
            #expect(failure.hint?.contains("--backend namespace") == true)
            #expect(BootFailure.read(from: sandboxes.home.sandbox("nolib").bootError) == failure)
        }
        #expect(sandboxes.entry("nolib").isLive == false)
        #expect(sandboxes.entry("nolib").state?.status == .failed)
    }

    @Test func libraryBefore1_10IsAMissingSymbolError() throws {
        let stub = try Self.buildStub("old", defines: ["STUB_BEFORE_V1_10"])
        let path = stub.appendingPathComponent("libkrun.so.1").path
        #expect(throws: KrunLoadError.missingSymbol(library: path, symbol: "krun_add_vsock_port2", since: "1.10.0")) {
            _ = try KrunLibrary.load(explicitPath: path)
        }
        // Without 1.17's plain-vsock calls the library still loads: only --network none needs them.
        let newer = try Self.buildStub("old117load", defines: ["STUB_WITHOUT_V1_17"])
        #expect(try KrunLibrary.load(explicitPath: newer.appendingPathComponent("libkrun.so.1").path).path.hasSuffix("libkrun.so.1"))
    }

    @Test(.timeLimit(.minutes(5)))
    func networkNoneOnALibraryBefore1_17IsAKrunLoadError() throws {
        try Fixtures.requireRoot()
        let stub = try Self.buildStub("old117", defines: ["STUB_WITHOUT_V1_17"])
        let sandboxes = Self.sandboxes("old117")
        let config = SandboxConfig(name: "old", rootfs: try Fixtures.busyboxRootfs(), backend: .krun, network: .none,
                                   krunLibrary: stub.appendingPathComponent("libkrun.so.1").path)
        #expect {
            _ = try sandboxes.boot(config)
        } throws: { error in
            guard case .bootFailed(let failure) = error as? SandboxError else { return false }
            return failure.stage == .krunLoad && failure.errno == ENOSYS && failure.message.contains("1.17.0")
        }
        // Nothing was started: the calls stop before krun_start_enter.
        #expect(!Self.calls(in: stub).contains { $0.hasPrefix("krun_start_enter") })
    }

    @Test(.timeLimit(.minutes(5)))
    func missingLibkrunfwIsDistinguishedFromMissingLibkrun() throws {
        try Fixtures.requireRoot()
        let stub = try Self.buildStub("nofw")
        #expect(FileManager.default.createFile(atPath: stub.appendingPathComponent("no-libkrunfw").path, contents: nil))
        let sandboxes = Self.sandboxes("nofw")
        let config = SandboxConfig(name: "nofw", rootfs: try Fixtures.busyboxRootfs(), backend: .krun,
                                   krunLibrary: stub.appendingPathComponent("libkrun.so.1").path)
        #expect {
            _ = try sandboxes.boot(config)
        } throws: { error in
            guard case .bootFailed(let failure) = error as? SandboxError else { return false }
            return failure.stage == .krunConfig && failure.errno == ENOENT && failure.message.contains("libkrunfw")
                && failure.hint?.contains("libkrunfw") == true
        }
        #expect(Self.calls(in: stub).last == "krun_start_enter(0) = -2")
    }

    @Test(.timeLimit(.minutes(5)))
    func stubbedVMBootsTheAgentAndStops() throws {
        try Fixtures.requireRoot()
        let stub = try Self.buildStub("e2e")
        let sandboxes = Self.sandboxes("e2e")
        let state = try sandboxes.boot(SandboxConfig(name: "vm", rootfs: try Fixtures.busyboxRootfs(), backend: .krun,
                                                     krunLibrary: stub.appendingPathComponent("libkrun.so.1").path))
        #expect(state.backend == .krun)
        // The host reaches the guest through the path given to krun_add_vsock_port2.
        var link: AgentLink? = try AgentLink(socketPath: state.agentSocket)
        let cmdline = try link!.exec(["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline"]).stdout
        // The agent is the VM's PID 1 with the arguments krun_set_exec got (vsock:2695 is the
        // stub's fd:3: it has no vsock, and hands over the listening socket instead; the tunnel
        // endpoint of exposed ports, vsock:2696, is fd:4 the same way).
        #expect(cmdline == "/sbin/tether-agent --listen fd:3 --tunnel fd:4 --hostname vm ", "\(cmdline)")
        #expect(try link!.exec(["hostname"]).stdout == "vm\n")
        link = nil
        #expect(try sandboxes.stop("vm", graceMs: 2_000) == .stopped(exit: "exited with status 0"))
        #expect(Self.calls(in: stub).last == "guest ended: status 0")
    }

    @Test(.timeLimit(.minutes(5)))
    func callsComeInOrderWithTheirArguments() throws {
        try Fixtures.requireRoot()
        let stub = try Self.buildStub("order")
        let sandboxes = Self.sandboxes("order")
        let rootfs = try Fixtures.busyboxRootfs()
        let paths = sandboxes.home.sandbox("order")
        // A stale socket from an earlier crash: the backend must unlink it (libkrun says -EEXIST).
        try FileManager.default.createDirectory(at: paths.directory, withIntermediateDirectories: true)
        let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(paths.agentSocket.path.utf8) + [0])
        }
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        close(stale)

        let config = SandboxConfig(name: "order", rootfs: rootfs, backend: .krun, cpus: 2, memoryMiB: 256,
                                   handshakeTimeoutMs: 20_000, krunLibrary: stub.appendingPathComponent("libkrun.so.1").path)
        var booted: SandboxState?
        var outcome = ""
        do {
            booted = try sandboxes.boot(config)
            outcome = "booted"
        } catch {
            // Until the real agent is in the rootfs the guest exits before saying hello; the
            // calls below are what this test checks either way.
            outcome = "\(error)"
            guard case .bootFailed(let failure) = error else { throw error }
            #expect(failure.stage == .handshake, "\(failure)")
        }
        if booted != nil { try sandboxes.stop("order", graceMs: 2_000) }
        let read = { (url: URL) in (try? String(contentsOf: url, encoding: .utf8)) ?? "-" }
        let evidence = "boot: \(outcome)\nsupervisor log:\n\(read(paths.supervisorLog))\nconsole:\n\(read(paths.console))"

        let sock = paths.agentSocket.path
        let expected = [
            "krun_create_ctx() = 0",
            "krun_set_vm_config(0, 2, 256) = 0",
            // --network none, the default: no implicit TSI vsock, a plain vsock device instead.
            "krun_disable_implicit_vsock(0) = 0",
            "krun_add_vsock(0, 0) = 0",
            "krun_set_root(0, \"\(rootfs)\") = 0",
            "krun_set_exec(0, \"/sbin/tether-agent\", [\"--listen\", \"vsock:2695\", \"--tunnel\", \"vsock:2696\", \"--hostname\", \"order\"], [\"KRUN_INIT_PID1=1\", \"HOSTNAME=order\", \"SWIFT_BACKTRACE=enable=no,swift-backtrace=/dev/null\"]) = 0",
            "krun_add_vsock_port2(0, 2695, \"\(sock)\", true) = 0",
            // Exposed ports: the agent's tunnel endpoint on a vsock port of its own.
            "krun_add_vsock_port2(0, 2696, \"\(paths.tunnelSocket.path)\", true) = 0",
            "krun_set_console_output(0, \"\(paths.console.path)\") = 0",
            "krun_start_enter(0)",
        ]
        let calls = Self.calls(in: stub)
        #expect(Array(calls.prefix(expected.count)) == expected, "\(evidence)")
        // envp is never NULL (NULL would copy the host's environment into the guest).
        #expect(!calls.contains { $0.contains("NULL") })
    }
}
