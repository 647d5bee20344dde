#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherPosix
import TetherProtocol

/// Boots a sandbox as new namespaces on this host: PID, mount, UTS, IPC (and network with
/// `--network none`), pivot_root into the rootfs (or an overlay on it), the agent as PID 1.
///
/// The agent's channel is a listening unix socket the host binds at `agent.sock` and hands to
/// the agent as fd 3 (`--listen fd:3`): the path stays reachable from the host whatever the
/// agent mounts over /run or /tmp, and the host closes its copy, so once the agent is gone a
/// connect is refused instead of hanging in the backlog.
public enum NamespaceBackend {
    /// The descriptor the agent's listening socket gets in the sandbox.
    public static let agentListenFD: CInt = 3

    /// What the sandbox's PID 1 is started with, besides its arguments.
    static func environment(for config: SandboxConfig) -> [String] {
        // `container` tells an init handed PID 1 (systemd) that it runs in a container
        // (systemd's CONTAINER_INTERFACE); the agent passes its environment on to that init.
        ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "container=tether",
         "TETHER_SANDBOX=\(config.name)", SandboxConfig.agentRuntimeEnvironment]
    }

    /// Starts the sandbox's PID 1 and returns its pid (in the host's PID namespace) and cgroup.
    public static func start(_ config: SandboxConfig, paths: SandboxPaths,
                             warnings: inout [String]) throws(BootFailure) -> (pid: pid_t, cgroup: Cgroup?) {
        guard geteuid() == 0 else {
            throw BootFailure(stage: .namespace, errno: EPERM,
                              message: "the namespace backend needs root (namespaces, mounts, pivot_root)",
                              hint: "run as root, or use --backend krun on a host with libkrun")
        }
        var st = stat()
        guard stat(config.rootfs, &st) == 0 else {
            let error = Errno.current
            throw BootFailure(stage: .rootfs, errno: error.rawValue, message: "rootfs \(config.rootfs): \(error.message)",
                              hint: "rootfs/build.sh assembles the default rootfs and prints its path")
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw BootFailure(stage: .rootfs, errno: ENOTDIR, message: "rootfs \(config.rootfs) is not a directory")
        }

        // The agent's socket, bound by us, inherited by the agent.
        let listener: OwnedFD
        do {
            listener = try Socket.listen(.unix(path: paths.agentSocket.path), backlog: 16)
        } catch {
            throw BootFailure(stage: .namespace, errno: error.errno?.rawValue ?? 0, message: "agent socket: \(error)")
        }
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        let console = open(paths.console.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        defer {
            if devNull >= 0 { close(devNull) }
            if console >= 0 { close(console) }
        }
        guard devNull >= 0, console >= 0 else {
            throw BootFailure(stage: .namespace, errno: Errno.current.rawValue, message: "opening /dev/null or \(paths.console.path) failed")
        }

        var launcher = NamespaceLauncher(path: config.agentPath,
                                         arguments: [config.agentPath] + config.agentArguments(listen: "fd:\(agentListenFD)"),
                                         environment: environment(for: config))
        launcher.namespaces = config.network == .none ? Namespaces.sandbox.union(.network) : .sandbox
        launcher.hostname = config.hostname ?? config.name
        launcher.rootfs = config.rootfs
        // /proc is there before the agent runs, as libkrun's init leaves it for a PID 1 it execs
        // (KRUN_INIT_PID1): a static Swift executable reads its argv (CommandLine) and its
        // runtime path from /proc/self before main, and gets neither without it. The agent
        // mounts its own procfs over this one.
        launcher.mountProc = true
        // The supervisor is single-threaded, so PDEATHSIG means "when the supervisor dies".
        launcher.parentDeathSignal = SIGKILL
        launcher.descriptors = [(devNull, 0), (console, 1), (console, 2), (listener.raw, agentListenFD)]
        if config.ephemeral {
            let overlay = try prepareOverlay(rootfs: config.rootfs, paths: paths)
            launcher.mountpoint = overlay.mountpoint
            launcher.overlayOptions = overlay.options
        }

        let cgroup = Cgroup.create(name: config.name, limits: CgroupLimits(config), warnings: &warnings)
        launcher.cgroupNamespace = cgroup != nil
        let pid: pid_t
        do {
            pid = try launcher.launch { (pid) throws(LaunchFailure) in
                if let cgroup, let error = cgroup.add(pid) {
                    throw LaunchFailure(stage: .namespace, errno: error)
                }
            }
        } catch {
            cgroup?.remove()
            throw describe(error, config: config)
        }
        return (pid, cgroup)
    }

    /// A message (and hint) for each step the child can fail at.
    static func describe(_ failure: LaunchFailure, config: SandboxConfig) -> BootFailure {
        let e = failure.errno
        switch failure.stage {
        case .agentExec where e.rawValue == ENOENT:
            return BootFailure(stage: .agentExec, errno: e.rawValue,
                               message: "the agent \(config.agentPath) is not in the rootfs \(config.rootfs) (\(e))",
                               hint: "rootfs/build.sh puts the static agent at \(SandboxConfig.defaultAgentPath); copy scripts/build-agent.sh's output there")
        case .agentExec:
            return BootFailure(stage: .agentExec, errno: e.rawValue,
                               message: "executing the agent \(config.agentPath) in \(config.rootfs) failed: \(e)",
                               hint: e.rawValue == ENOEXEC || e.rawValue == EACCES
                                   ? "the agent must be the static executable scripts/build-agent.sh prints" : nil)
        case .rootfs:
            return BootFailure(stage: .rootfs, errno: e.rawValue, message: "rootfs \(config.rootfs) cannot be used: \(e)")
        case .mount:
            return BootFailure(stage: .mount, errno: e.rawValue,
                               message: "mounting the rootfs \(config.rootfs) (private mounts, bind or overlay, pivot_root) failed: \(e)")
        default:
            return BootFailure(stage: .namespace, errno: e.rawValue,
                               message: "creating the sandbox's namespaces or cgroup failed: \(e)",
                               hint: e.rawValue == EPERM ? "run as root on a kernel that allows namespaces" : nil)
        }
    }

    /// upper/, work/ and root/ under the sandbox's overlay/ directory, emptied first.
    static func prepareOverlay(rootfs: String, paths: SandboxPaths) throws(BootFailure) -> (mountpoint: String, options: String) {
        // overlayfs splits its options at ',' and lowerdir at ':'; such paths cannot be given.
        for path in [rootfs, paths.overlay.path] where path.contains(",") || path.contains(":") {
            throw BootFailure(stage: .rootfs, errno: EINVAL, message: "overlay paths cannot contain ',' or ':': \(path)")
        }
        let fm = FileManager.default
        try? fm.removeItem(at: paths.overlay)
        let upper = paths.overlay.appendingPathComponent("upper").path
        let work = paths.overlay.appendingPathComponent("work").path
        let root = paths.overlay.appendingPathComponent("root").path
        do {
            for dir in [upper, work, root] { try fm.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        } catch {
            throw BootFailure(stage: .mount, errno: EIO, message: "creating the overlay directories in \(paths.overlay.path): \(error)")
        }
        return (root, "lowerdir=\(rootfs),upperdir=\(upper),workdir=\(work)")
    }
}
