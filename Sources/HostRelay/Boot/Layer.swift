#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import Foundation
import TetherPosix

/// The sandbox's writable layer: the upper and work directories of the overlay whose lower
/// layer is the shared image, so no guest ever writes the cached tree.
///
/// - `--ephemeral`: a tmpfs of `--disk` MiB, gone with the sandbox.
/// - otherwise, as root: an ext4 image of `--disk` MiB (sparse) in the sandbox's directory
///   (`overlay/layer.img`), loop-mounted while the sandbox runs and kept until `tether rm NAME`;
///   where the host has no loop devices, and rootless, the directory `overlay/layer`, which
///   nothing bounds (a warning says so).
///
/// Run as root, the host builds the whole root before the sandbox starts (an idmapped,
/// read-only view of the image under the layer, as one mount fd the child attaches): the
/// sandbox's root then needs no access to the host's directories on the way to its layer.
/// Rootless, the child mounts the overlay itself inside its user namespace (overlayfs allows
/// that since Linux 5.11), with the image's files the user's own.
enum Layer {
    /// Where the upper and work directories of a root the host builds live.
    enum Storage: Equatable {
        case tmpfs(options: String)
        case image(path: String)
        case directory(String)
    }

    /// The host builds the root (root only); ids in a persistent layer written under another
    /// slot are shifted from `previousRoot` first.
    case builtByHost(Storage, previousRoot: uid_t?)
    /// The child mounts it (rootless): where the root goes, the overlay's options, and a tmpfs
    /// (options, directory) to mount first for an ephemeral layer.
    case mountedByChild(mountpoint: String, options: String, tmpfs: String?, directory: String?)

    static func prepare(config: SandboxConfig, paths: SandboxPaths, mapping: IDMapping, previousRoot: uid_t?,
                        warnings: inout [String]) throws(BootFailure) -> Layer {
        let disk = config.diskMiB ?? NamespaceBackend.defaultDiskMiB
        guard disk > 0 else { throw BootFailure(stage: .layer, errno: EINVAL, message: "--disk must be at least 1 MiB (got \(disk))") }
        let tmpfs = "size=\(disk)m,mode=0755"
        let directory = paths.overlay.path
        let layer = directory + "/layer"
        // An earlier ephemeral run's leftovers (a killed supervisor) are nobody's.
        if config.ephemeral { try? FileManager.default.removeItem(atPath: directory) }
        if geteuid() == 0 {
            if config.ephemeral { return .builtByHost(.tmpfs(options: tmpfs), previousRoot: nil) }
            try makeDirectories([directory], mode: 0o700)
            let image = directory + "/layer.img"
            if access("/dev/loop-control", F_OK) == 0, access(image, F_OK) == 0 || access(layer, F_OK) != 0 {
                try prepareImage(image, disk: disk, warnings: &warnings)
                return .builtByHost(.image(path: image), previousRoot: previousRoot)
            }
            try makeDirectories([layer, layer + "/upper", layer + "/work"], mode: 0o755)
            warnings.append("--disk \(disk): the persistent layer \(layer) is a directory on the host's disk and is not bounded (this host has no loop devices); --ephemeral layers are")
            return .builtByHost(.directory(layer), previousRoot: previousRoot)
        }

        // Rootless: overlayfs splits its options at ',' and lowerdir at ':'.
        for path in [config.rootfs, directory] where path.contains(",") || path.contains(":") {
            throw BootFailure(stage: .rootfs, errno: EINVAL, message: "overlay paths cannot contain ',' or ':': \(path)")
        }
        let root = directory + "/root"
        if config.ephemeral {
            try makeDirectories([directory, layer, root], mode: 0o700)
        } else {
            try makeDirectories([directory, layer, layer + "/upper", layer + "/work", root], mode: 0o700)
            warnings.append("--disk \(disk): rootless, the persistent layer \(layer) is a directory on the host's disk and is not bounded; --ephemeral layers are")
        }
        // userxattr: an unprivileged overlay keeps its metadata in user.* attributes.
        let options = "lowerdir=\(config.rootfs),upperdir=\(layer)/upper,workdir=\(layer)/work,userxattr"
        return .mountedByChild(mountpoint: root, options: options, tmpfs: config.ephemeral ? tmpfs : nil,
                               directory: config.ephemeral ? layer : nil)
    }

    /// A sparse file of `disk` MiB with an empty ext4 on it, made once; an existing image keeps
    /// its size (a warning says so when --disk asks for another).
    static func prepareImage(_ image: String, disk: Int, warnings: inout [String]) throws(BootFailure) {
        var st = stat()
        if lstat(image, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFREG else {
                throw BootFailure(stage: .layer, errno: EINVAL, message: "the layer image \(image) is not a regular file")
            }
            let made = Int(st.st_size >> 20)
            if made != disk {
                warnings.append("--disk \(disk): the layer image was made with \(made) MiB and keeps that size (tether rm NAME starts over)")
            }
            return
        }
        let fd = open(image, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw BootFailure(stage: .layer, errno: errno, message: "cannot create the layer image \(image): \(Errno.current)") }
        let sized = ftruncate(fd, off_t(disk) << 20) == 0
        let error = errno
        close(fd)
        guard sized else {
            unlink(image)
            throw BootFailure(stage: .layer, errno: error, message: "cannot size the layer image \(image) to \(disk) MiB: \(Errno(rawValue: error))")
        }
        // No reserved blocks (the guest owns the whole layer); inode tables and the journal
        // are initialised lazily, so making a 1 GiB image takes milliseconds.
        let mkfs = HostProgram.find("mkfs.ext4") ?? "/sbin/mkfs.ext4"
        let status = HostProgram.run([mkfs, "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", image])
        guard status == 0 else {
            unlink(image)
            throw BootFailure(stage: .layer, errno: EIO, message: "\(mkfs) failed on the layer image \(image) (wait status \(status))",
                              hint: "install e2fsprogs")
        }
    }

    private static func makeDirectories(_ paths: [String], mode: mode_t) throws(BootFailure) {
        for path in paths where mkdir(path, mode) != 0 && errno != EEXIST {
            throw BootFailure(stage: .layer, errno: errno, message: "cannot create the layer directory \(path): \(Errno.current)")
        }
    }

    /// The sandbox's root as one detached mount (root only, while the child `pid` waits): the
    /// image through an idmapped, read-only mount in the child's user namespace (the host's
    /// root-owned files look owned by the guest's root), under the layer. Returns its fd.
    static func buildRoot(pid: pid_t, rootfs: String, layer: Layer, owner: IDMapping) throws(LaunchFailure) -> CInt {
        guard case .builtByHost(let storage, let previousRoot) = layer else { return -1 }
        func check(_ result: CInt) throws(LaunchFailure) -> CInt {
            guard result >= 0 else { throw LaunchFailure(stage: .mount, errno: Errno(rawValue: -result)) }
            return result
        }
        let userns = open("/proc/\(pid)/ns/user", O_RDONLY | O_CLOEXEC)
        guard userns >= 0 else { throw LaunchFailure(stage: .userNamespace, errno: Errno.current) }
        defer { close(userns) }
        let lower = try check(csys_idmapped_tree(rootfs, userns))
        defer { close(lower) }
        var tree: CInt = -1
        defer { if tree >= 0 { close(tree) } }
        let base: String
        switch storage {
        case .tmpfs(let options):
            tree = try check(csys_tmpfs_tree(options))
            base = "/proc/self/fd/\(tree)"
        case .image(let path):
            var number: CInt = 0
            let loop = try check(csys_loop_attach(path, &number))
            // The filesystem holds the device from here on; AUTOCLEAR frees it after the last mount.
            defer { close(loop) }
            tree = try check(csys_ext4_tree("/dev/loop\(number)"))
            base = "/proc/self/fd/\(tree)"
        case .directory(let path):
            base = path
        }
        for name in ["upper", "work"] {
            let path = base + "/" + name
            guard mkdir(path, 0o755) == 0 || errno == EEXIST else { throw LaunchFailure(stage: .mount, errno: Errno.current) }
            if let previousRoot, previousRoot != owner.rootUID, name == "upper" {
                UserNamespace.shiftOwnership(of: path, from: previousRoot, to: owner.rootUID)
            }
            guard lchown(path, owner.rootUID, owner.rootGID) == 0 else { throw LaunchFailure(stage: .mount, errno: Errno.current) }
        }
        return try check(csys_overlay_root("/proc/self/fd/\(lower)", base + "/upper", base + "/work", nil))
    }
}
