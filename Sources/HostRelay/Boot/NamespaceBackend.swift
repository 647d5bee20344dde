#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import Foundation
import TetherPosix
import TetherProtocol

/// Boots a sandbox as new namespaces on this host: user, PID, mount, UTS, IPC, cgroup and
/// (unless `--network host`) network, pivot_root into an overlay of the rootfs and the sandbox's
/// own layer, the agent as PID 1.
///
/// The agent's channel is a listening unix socket the host binds at `agent.sock` and hands to
/// the agent as fd 3 (`--listen fd:3`): the path stays reachable from the host whatever the
/// agent mounts over /run or /tmp, and the host closes its copy, so once the agent is gone a
/// connect is refused instead of hanging in the backlog.
public enum NamespaceBackend {
    /// The descriptor the agent's listening socket gets in the sandbox.
    public static let agentListenFD: CInt = 3
    /// The descriptor of the agent's tunnel endpoint (exposed ports), bound by the host at
    /// `tunnel.sock` for the same reason as `agent.sock`.
    public static let tunnelListenFD: CInt = 4

    /// What the sandbox's PID 1 is started with, besides its arguments.
    static func environment(for config: SandboxConfig) -> [String] {
        // `container` tells an init handed PID 1 (systemd) that it runs in a container
        // (systemd's CONTAINER_INTERFACE); the agent passes its environment on to that init.
        ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "container=tether",
         "TETHER_SANDBOX=\(config.name)", SandboxConfig.agentRuntimeEnvironment]
    }

    /// Capabilities no process of a sandbox keeps, an init handed PID 1 included (what
    /// systemd-nspawn leaves out too): inside a user namespace they could only reach the host's
    /// kernel (modules, raw I/O, the clock, accounting, MAC policy, the kernel log, BPF, perf),
    /// and an init that sees them tries to use them (systemd mounts debugfs when it holds
    /// CAP_SYS_RAWIO). Guest commands get Docker's default set on top of this (the agent's spawn).
    /// Numbers from linux/capability.h.
    static let sandboxBoundingSetDrop: UInt64 = [
        16,  // SYS_MODULE
        17,  // SYS_RAWIO
        20,  // SYS_PACCT
        25,  // SYS_TIME
        30,  // AUDIT_CONTROL
        32,  // MAC_OVERRIDE
        33,  // MAC_ADMIN
        34,  // SYSLOG
        35,  // WAKE_ALARM
        36,  // BLOCK_SUSPEND
        37,  // AUDIT_READ
        38,  // PERFMON
        39,  // BPF
        40,  // CHECKPOINT_RESTORE
    ].reduce(UInt64(0)) { $0 | (1 << $1) }

    /// The writable layer's size when `--disk` is not given.
    public static let defaultDiskMiB = 1024

    /// Starts the sandbox's PID 1 and returns its pid (in the host's PID namespace) and cgroup.
    ///
    /// Confinement (SECURITY.md): a user namespace always (root: a slot of 65,536 host ids of
    /// its own; rootless: the user's own uid), the image as the read-only lower layer of an
    /// overlay whose upper layer is the sandbox's own, /proc, /sys and /dev built with the
    /// sandbox's masked and read-only paths before the agent runs.
    public static func start(_ config: SandboxConfig, paths: SandboxPaths,
                             warnings: inout [String]) throws(BootFailure) -> (pid: pid_t, cgroup: Cgroup?, egress: EgressNetwork?) {
        var st = stat()
        guard stat(config.rootfs, &st) == 0 else {
            let error = Errno.current
            throw BootFailure(stage: .rootfs, errno: error.rawValue, message: "rootfs \(config.rootfs): \(error.message)",
                              hint: "rootfs/build.sh assembles the default rootfs and prints its path")
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw BootFailure(stage: .rootfs, errno: ENOTDIR, message: "rootfs \(config.rootfs) is not a directory")
        }
        if config.network == .host {
            warnings.append(NetworkMode.hostWarning)
        }
        let (mapping, previousRoot) = try UserNamespace.mapping(for: config, paths: paths)
        // Made before the sandbox, apart from its user namespace (EgressNetwork).
        let egress = config.network == .egress ? try EgressNetwork.create(config, mapping: mapping, paths: paths) : nil
        let layer = try Layer.prepare(config: config, paths: paths, mapping: mapping, previousRoot: previousRoot, warnings: &warnings)

        // The agent's socket, bound by us, inherited by the agent.
        let listener: OwnedFD
        do {
            listener = try Socket.listen(.unix(path: paths.agentSocket.path), backlog: 16)
        } catch {
            throw BootFailure(stage: .namespace, errno: error.errno?.rawValue ?? 0, message: "agent socket: \(error)")
        }
        let tunnel: OwnedFD
        do {
            unlink(paths.tunnelSocket.path)
            tunnel = try Socket.listen(.unix(path: paths.tunnelSocket.path), backlog: 1024)
        } catch {
            throw BootFailure(stage: .namespace, errno: error.errno?.rawValue ?? 0, message: "tunnel socket: \(error)")
        }
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        let console = open(paths.console.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
        defer {
            if devNull >= 0 { close(devNull) }
            if console >= 0 { close(console) }
        }
        guard devNull >= 0, console >= 0 else {
            throw BootFailure(stage: .namespace, errno: Errno.current.rawValue, message: "opening /dev/null or \(paths.console.path) failed")
        }

        // The agent is run from the image itself, never from what the sandbox's layer shows at
        // its path: a guest that replaced /sbin/tether-agent in its own layer must not have its
        // program run as the next boot's PID 1.
        let agent = csys_open_in_root(config.rootfs, config.agentPath)
        guard agent >= 0 else {
            throw describe(LaunchFailure(stage: .agentExec, errno: Errno(rawValue: -agent)), config: config)
        }
        defer { close(agent) }

        var launcher = NamespaceLauncher(path: config.agentPath,
                                         arguments: [config.agentPath] + config.agentArguments(listen: "fd:\(agentListenFD)", tunnel: "fd:\(tunnelListenFD)"),
                                         environment: environment(for: config))
        launcher.namespaces = Namespaces.sandbox.union(.user)
        if config.network == .none { launcher.namespaces.insert(.network) }
        if let egress {
            launcher.joinNetworkFD = egress.networkFD
            launcher.joinUserFD = egress.ownerFD
            launcher.innerMaps = egress.innerMaps
            launcher.arguments += ["--nameserver", EgressNetwork.nameserver]
        }
        launcher.setGroups = !mapping.denySetgroups
        launcher.hostname = config.hostname ?? config.name
        launcher.rootfs = config.rootfs
        launcher.apiFilesystems = true
        launcher.executableFD = agent
        launcher.boundingSetDrop = sandboxBoundingSetDrop
        // A new sysfs needs the network namespace to be owned by the sandbox's user namespace:
        // only `none`'s is (egress's is not, on purpose); the others bind the host's, read-only.
        launcher.newSysfs = config.network == .none
        launcher.devptsOptions = "newinstance,ptmxmode=0666,mode=0620" + (mapping.mapsTTYGroup ? ",gid=5" : "")
        // The supervisor is single-threaded, so PDEATHSIG means "when the supervisor dies".
        launcher.parentDeathSignal = SIGKILL
        launcher.descriptors = [(devNull, 0), (console, 1), (console, 2), (listener.raw, agentListenFD),
                                (tunnel.raw, tunnelListenFD)]
        switch layer {
        case .builtByHost:
            launcher.receivesRoot = true
        case .mountedByChild(let mountpoint, let options, let tmpfs, let directory):
            launcher.mountpoint = mountpoint
            launcher.overlayOptions = options
            launcher.layerTmpfsOptions = tmpfs
            launcher.layerDirectory = directory
        }

        let cgroup = Cgroup.create(name: config.name, limits: CgroupLimits(config), warnings: &warnings)
        // An init in the sandbox (systemd) builds its own tree under the sandbox's cgroup: the
        // guest's root may create and enter child cgroups there, never write the limit files.
        if let cgroup {
            do { try cgroup.delegate(toUID: mapping.rootUID, gid: mapping.rootGID) } catch { warnings.append("\(error)") }
            // The agent as PID 1 shows the guest its cgroups read-only; an init mounts its own.
            if config.initSystem == nil { launcher.cgroupMounts = cgroup.guestMounts() }
        }
        launcher.cgroupNamespace = cgroup != nil
        var root: CInt = -1
        defer { if root >= 0 { close(root) } }
        let pid: pid_t
        do {
            pid = try launcher.launch { (pid) throws(LaunchFailure) in
                if let cgroup, let error = cgroup.add(pid) {
                    throw LaunchFailure(stage: .namespace, errno: error)
                }
                // Joining the egress network's user namespace, the helper that did wrote them.
                if launcher.innerMaps == nil { try UserNamespace.writeMaps(pid: pid, mapping) }
                root = try Layer.buildRoot(pid: pid, rootfs: config.rootfs, layer: layer, owner: mapping)
                return root
            }
        } catch {
            cgroup?.remove()
            throw describe(error, config: config)
        }
        return (pid, cgroup, egress)
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
                               message: "mounting the rootfs \(config.rootfs) (private mounts, the overlay with the sandbox's layer, pivot_root) failed: \(e)",
                               hint: e.rawValue == ENOSYS || e.rawValue == EINVAL ? "the kernel needs idmapped mounts and overlayfs in user namespaces (Linux 5.19 or later)" : nil)
        case .userNamespace:
            return BootFailure(stage: .userNamespace, errno: e.rawValue,
                               message: "setting up the sandbox's user namespace (id maps, becoming its root) failed: \(e)",
                               hint: geteuid() == 0 ? nil : "rootless: check /etc/subuid and /etc/subgid for your user, or remove the uidmap package's helpers to map your own id only")
        case .apiFilesystems:
            return BootFailure(stage: .apiFilesystems, errno: e.rawValue,
                               message: "building /proc, /sys or /dev inside the sandbox (masked and read-only paths) failed: \(e)")
        default:
            return BootFailure(stage: .namespace, errno: e.rawValue,
                               message: "creating the sandbox's namespaces or cgroup failed: \(e)",
                               hint: e.rawValue == EPERM || e.rawValue == ENOSPC
                                   ? "the host must allow user namespaces (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, kernel.apparmor_restrict_unprivileged_userns)" : nil)
        }
    }
}
