#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix

/// Which namespaces a sandbox's first process gets.
public struct Namespaces: OptionSet, Sendable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    public static let pid = Namespaces(rawValue: Int32(CSYS_CLONE_NEWPID))
    public static let mount = Namespaces(rawValue: Int32(CSYS_CLONE_NEWNS))
    public static let uts = Namespaces(rawValue: Int32(CSYS_CLONE_NEWUTS))
    public static let ipc = Namespaces(rawValue: Int32(CSYS_CLONE_NEWIPC))
    public static let network = Namespaces(rawValue: Int32(CSYS_CLONE_NEWNET))
    /// The parent must write the id maps in `beforeStart` (see `NamespaceLauncher.launch`).
    public static let user = Namespaces(rawValue: Int32(CSYS_CLONE_NEWUSER))
    /// The standard set of a sandbox: everything but the network.
    public static let sandbox: Namespaces = [.pid, .mount, .uts, .ipc]
}

/// A step of `NamespaceLauncher.launch` that failed in the child, with its errno.
public struct LaunchFailure: Error, Equatable, Sendable {
    public var stage: BootStage
    public var errno: Errno
    public init(stage: BootStage, errno: Errno) {
        self.stage = stage
        self.errno = errno
    }
}

/// Starts one process in new namespaces, inside a root directory (csys_sandbox_clone).
///
/// Owns nothing after `launch` returns: the caller gets the child's pid and must reap it
/// (waitpid(2)). The child gets exactly the descriptors of `descriptors`.
public struct NamespaceLauncher {
    public var namespaces: Namespaces = .sandbox
    /// Unshare a cgroup namespace after `beforeStart` ran, so the child's cgroup (where
    /// `beforeStart` put it) is the root of what it sees.
    public var cgroupNamespace = false
    public var hostname: String?
    /// The root directory to pivot_root into; nil stays in the host's root.
    public var rootfs: String?
    /// Where the root is mounted before pivot_root (nil: onto `rootfs` itself).
    public var mountpoint: String?
    /// overlayfs options (`lowerdir=...,upperdir=...,workdir=...`): mount an overlay on
    /// `mountpoint` instead of bind-mounting `rootfs`.
    public var overlayOptions: String?
    /// The program, resolved inside the new root, and its argv and environment.
    public var path: String
    public var arguments: [String]
    public var environment: [String]
    /// Parent descriptor -> child descriptor number (include 0, 1 and 2).
    public var descriptors: [(parent: CInt, child: CInt)] = []
    /// Sent to the child when the thread that launched it exits (PR_SET_PDEATHSIG); 0: none.
    /// Only for single-threaded parents: it fires when the launching *thread* ends.
    public var parentDeathSignal: CInt = 0
    /// With a network namespace: bring its loopback up.
    public var loopbackUp = true
    /// setsid(2) in the child, so the host's terminal signals (^C) do not reach the sandbox.
    public var newSession = true
    /// With a rootfs: mount a procfs of the new PID namespace on /proc before the exec.
    public var mountProc = false
    /// With `.user`: the child drops its supplementary groups too (not allowed where the parent
    /// wrote "deny" to /proc/PID/setgroups, as an unprivileged parent must).
    public var setGroups = true
    /// `beforeStart` returns a mount fd (the root, built by the parent) that the child attaches
    /// and pivots into; `rootfs` and `overlayOptions` are then not used for the root.
    public var receivesRoot = false
    /// tmpfs options for the writable layer, mounted by the child on `layerDirectory` before the
    /// overlay (upper/ and work/ are made in it): the child's own layer when the parent cannot
    /// build the root (unprivileged).
    public var layerTmpfsOptions: String?
    public var layerDirectory: String?
    /// Build /proc, /sys and /dev inside the root with the sandbox's masked and read-only paths.
    public var apiFilesystems = false
    /// With `apiFilesystems`: a new sysfs (needs the network namespace to be the sandbox's own);
    /// otherwise the host's /sys, read-only.
    public var newSysfs = true
    /// With `apiFilesystems`: the options of the devpts instance on /dev/pts.
    public var devptsOptions: String?
    /// With `apiFilesystems`: cgroup hierarchies to mount read-only under /sys/fs/cgroup, as
    /// (directory, filesystem type, options); a directory of "" mounts on /sys/fs/cgroup.
    public var cgroupMounts: [(directory: String, type: String, options: String)] = []
    /// Capabilities (bit N: capability N) dropped from the child's bounding set once it is in
    /// its user namespace: nothing in the sandbox, init included, can ever have them.
    public var boundingSetDrop: UInt64 = 0
    /// A descriptor of the program to run (execveat), instead of `path` resolved in the new
    /// root; the caller keeps ownership. -1: `path`.
    public var executableFD: CInt = -1
    /// /proc/sys files and the values written to them once the network namespace is up
    /// (written as the child's root, before anything else runs in it).
    public var sysctls: [(path: String, value: String)] = []
    /// An existing network namespace to start the child in, instead of a new one (`.network`
    /// must then not be in `namespaces`); the caller keeps ownership. -1: none.
    public var joinNetworkFD: CInt = -1
    /// With `joinNetworkFD`: the user namespace owning it, joined first, so that the child's own
    /// user namespace is made inside it; the caller keeps ownership. -1: none.
    public var joinUserFD: CInt = -1
    /// With `joinUserFD`: the child's uid_map and gid_map (ids of `joinUserFD`'s namespace),
    /// written by the helper that joined it; `beforeStart` then writes no maps.
    public var innerMaps: (uids: String, gids: String)?

    public init(path: String, arguments: [String], environment: [String] = []) {
        self.path = path
        self.arguments = arguments
        self.environment = environment
    }

    /// Clones the child, runs `beforeStart(pid)` while the child waits (cgroup placement), then
    /// lets it go and waits for its exec. Returns the pid (in our PID namespace) once the exec
    /// succeeded; throws the failing step, after reaping the child, otherwise.
    ///
    /// With `.user` in `namespaces`, `beforeStart` must write the child's uid_map and gid_map
    /// (the child waits). It returns a descriptor to hand to the child with "go" (the root,
    /// with `receivesRoot`), or -1; the caller keeps ownership of it.
    public func launch(beforeStart: (pid_t) throws(LaunchFailure) -> CInt = { _ throws(LaunchFailure) in -1 }) throws(LaunchFailure) -> pid_t {
        // Every string the child reads, copied before the clone (the child must not allocate).
        let optionals = [hostname, rootfs, mountpoint, overlayOptions, path, layerTmpfsOptions, layerDirectory, devptsOptions,
                         innerMaps?.uids, innerMaps?.gids]
        let fields = CStringArray(optionals.map { $0 ?? "" })
        let field = { (i: Int) -> UnsafePointer<CChar>? in optionals[i] == nil ? nil : UnsafePointer(fields.pointers[i]) }
        let argv = CStringArray(arguments)
        let envp = CStringArray(environment)
        let cgroupFields = CStringArray(cgroupMounts.flatMap { [$0.directory, $0.type, $0.options] })
        let map = descriptors.flatMap { [$0.parent, $0.child] }
        let sysctlFields = CStringArray(sysctls.flatMap { [$0.path, $0.value] })

        var goFD: CInt = -1
        var statusFD: CInt = -1
        let pid: pid_t = withExtendedLifetime((fields, argv, envp, cgroupFields, sysctlFields)) {
            map.withUnsafeBufferPointer { mapBuffer in
                var spec = csys_sandbox_spec()
                spec.clone_flags = namespaces.rawValue
                spec.new_cgroup_ns = cgroupNamespace ? 1 : 0
                spec.loopback_up = namespaces.contains(.network) && loopbackUp ? 1 : 0
                spec.parent_death_signal = parentDeathSignal
                spec.new_session = newSession ? 1 : 0
                spec.mount_proc = mountProc ? 1 : 0
                spec.hostname = field(0)
                spec.rootfs = field(1)
                spec.mountpoint = field(2)
                spec.overlay_options = field(3)
                spec.path = field(4)
                spec.set_groups = setGroups ? 1 : 0
                spec.receive_root = receivesRoot ? 1 : 0
                spec.layer_tmpfs = field(5)
                spec.layer_dir = field(6)
                spec.api_filesystems = apiFilesystems ? 1 : 0
                spec.new_sysfs = newSysfs ? 1 : 0
                spec.devpts_options = field(7)
                spec.exec_fd = executableFD
                spec.bounding_drop = boundingSetDrop
                spec.cgroup_mounts = cgroupMounts.isEmpty ? nil : cgroupFields.constPointers
                spec.sysctls = sysctls.isEmpty ? nil : sysctlFields.constPointers
                spec.join_netns_fd = joinNetworkFD
                spec.join_userns_fd = joinNetworkFD >= 0 ? joinUserFD : -1
                spec.inner_uid_map = field(8)
                spec.inner_gid_map = field(9)
                spec.argv = UnsafePointer(argv.pointers)
                spec.envp = UnsafePointer(envp.pointers)
                spec.fd_map = mapBuffer.baseAddress
                spec.fd_map_pairs = CInt(descriptors.count)
                return csys_sandbox_clone(&spec, &goFD, &statusFD)
            }
        }
        guard pid > 0 else { throw LaunchFailure(stage: .namespace, errno: Errno(rawValue: -pid)) }
        let go = OwnedFD(adopting: goFD)
        let status = OwnedFD(adopting: statusFD)

        let passed: CInt
        do {
            passed = try beforeStart(pid)
        } catch {
            // Closing "go" unwritten makes the child exit without doing anything.
            _ = consume go
            NamespaceLauncher.reap(pid)
            throw error
        }
        _ = csys_sandbox_go(go.raw, passed)
        _ = consume go

        var report = csys_boot_report()
        var got = 0
        while got < MemoryLayout<csys_boot_report>.size {
            let n = withUnsafeMutableBytes(of: &report) { raw in
                Glibc.read(status.raw, raw.baseAddress! + got, raw.count - got)
            }
            if n > 0 { got += n; continue }
            if n < 0 && errno == EINTR { continue }
            break
        }
        if got == 0 { return pid }     // the exec closed the CLOEXEC pipe
        NamespaceLauncher.reap(pid)
        guard got == MemoryLayout<csys_boot_report>.size else {
            // The child writes its report in one 8-byte write(2), so this means it was killed mid-way.
            throw LaunchFailure(stage: .namespace, errno: Errno(rawValue: EIO))
        }
        throw LaunchFailure(stage: Self.stage(report.stage), errno: Errno(rawValue: report.error))
    }

    static func stage(_ raw: Int32) -> BootStage {
        switch raw {
        case Int32(CSYS_BOOT_STAGE_ROOTFS): .rootfs
        case Int32(CSYS_BOOT_STAGE_MOUNT): .mount
        case Int32(CSYS_BOOT_STAGE_EXEC): .agentExec
        case Int32(CSYS_BOOT_STAGE_USER): .userNamespace
        case Int32(CSYS_BOOT_STAGE_API_FS): .apiFilesystems
        default: .namespace
        }
    }

    /// Waits for a child that failed before its exec (it _exits at once).
    static func reap(_ pid: pid_t) {
        var status: CInt = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }
}
