#if canImport(Glibc)
import Glibc
#endif
import CSys
import Foundation
import TetherBoot
import TetherPosix

/// Boot to hello with the namespace backend, confinement included: from the host's first step
/// (the id slot, the layer: a tmpfs when `ephemeral`, else a new ext4 image made with mkfs) through
/// the clone(2) of the sandbox's PID 1 (user, PID, mount, UTS, IPC, cgroup and network namespaces,
/// the idmapped overlay root, /proc, /sys and /dev with their masks, pivot_root) and the static
/// agent as PID 1, to the agent's hello read on the host side.
enum BootTiming {
    /// With `network` `.egress` the time includes making the network namespace with its rules
    /// (the host's nft) and pasta configuring the guest's interface.
    static func namespaceBootToHello(rootfs: String, count: Int, ephemeral: Bool, network: NetworkMode = .none) throws -> Timings {
        guard geteuid() == 0 else { throw BenchError.missing("root (the namespace backend needs namespaces and mounts)") }
        var template = Array("/tmp/tether-bench-home-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw BenchError.failed("mkdtemp: \(Errno.current)")
        }
        let home = TetherHome(root: URL(fileURLWithPath: String(cString: made)))
        defer { try? FileManager.default.removeItem(at: home.root) }
        var timings = Timings(reserving: count)
        for index in 0..<count {
            let name = "bench-\(getpid())-\(index)"
            let paths = home.sandbox(name)
            try FileManager.default.createDirectory(at: paths.directory, withIntermediateDirectories: true)
            var warnings: [String] = []
            let config = SandboxConfig(name: name, rootfs: rootfs, network: network, ephemeral: ephemeral)
            let start = Clock.monotonicNs()
            let (pid, cgroup, egress) = try NamespaceBackend.start(config, paths: paths, warnings: &warnings)
            let pidfd = csys_pidfd_open(pid, 0)
            defer {
                kill(pid, SIGKILL)
                var status: CInt = 0
                _ = waitpid(pid, &status, 0)
                if pidfd >= 0 { close(pidfd) }
                cgroup?.remove()
            }
            guard pidfd >= 0 else { throw BenchError.failed("pidfd_open: \(Errno.current)") }
            if let failure = egress?.waitUntilConfigured(sandboxPid: pid) { throw BenchError.failed("boot \(index): \(failure)") }
            let outcome = Handshake.waitForAgent(socketPath: paths.agentSocket.path, pidfd: pidfd,
                                                 deadlineNs: start + 30_000_000_000)
            guard case .hello = outcome else {
                let console = (try? String(contentsOf: paths.console, encoding: .utf8)) ?? ""
                throw BenchError.failed("boot \(index): \(outcome)\n\(console)")
            }
            timings.add(Clock.monotonicNs() - start)
        }
        return timings
    }

    /// The bundled rootfs (rootfs/build.sh of the source tree, cached after the first build)
    /// with `agent` in it.
    static func bundledRootfs(agent: String) throws -> String {
        guard let script = SourceTree.file("rootfs/build.sh") else {
            throw BenchError.missing("rootfs/build.sh: no source tree above \(CommandLine.arguments[0])")
        }
        return try SourceTree.run(script, ["--agent", agent])
    }
}
