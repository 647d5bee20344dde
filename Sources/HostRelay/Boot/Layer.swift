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
/// - otherwise: `layer/upper` and `layer/work` in the sandbox's directory (`overlay/`), kept
///   across stops until `tether rm NAME`.
///
/// Run as root, the host builds the whole root before the sandbox starts (an idmapped,
/// read-only view of the image under the layer, as one mount fd the child attaches): the
/// sandbox's root then needs no access to the host's directories on the way to its layer.
/// Rootless, the child mounts the overlay itself inside its user namespace (overlayfs allows
/// that since Linux 5.11), with the image's files the user's own.
enum Layer {
    /// The host builds the root (root only): the persistent layer's directory, or tmpfs options.
    case builtByHost(directory: String?, tmpfsOptions: String?)
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
        if config.ephemeral || geteuid() != 0 {
            // An earlier ephemeral run's leftovers (a killed supervisor) are nobody's.
            if config.ephemeral { try? FileManager.default.removeItem(atPath: directory) }
        }
        if geteuid() == 0 {
            if config.ephemeral { return .builtByHost(directory: nil, tmpfsOptions: tmpfs) }
            try makeDirectories([directory, layer, layer + "/upper", layer + "/work"], mode: 0o755)
            if let previousRoot, previousRoot != mapping.rootUID {
                UserNamespace.shiftOwnership(of: layer, from: previousRoot, to: mapping.rootUID)
            }
            for path in [layer + "/upper", layer + "/work"] where lchown(path, mapping.rootUID, mapping.rootGID) != 0 {
                throw BootFailure(stage: .layer, errno: errno, message: "cannot give \(path) to the sandbox's root: \(Errno.current)")
            }
            warnings.append("--disk \(disk): the persistent layer \(layer) is a directory on the host's disk and is not bounded; --ephemeral layers are")
            return .builtByHost(directory: layer, tmpfsOptions: nil)
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

    private static func makeDirectories(_ paths: [String], mode: mode_t) throws(BootFailure) {
        for path in paths where mkdir(path, mode) != 0 && errno != EEXIST {
            throw BootFailure(stage: .layer, errno: errno, message: "cannot create the layer directory \(path): \(Errno.current)")
        }
    }

    /// The sandbox's root as one detached mount (root only, while the child `pid` waits): the
    /// image through an idmapped, read-only mount in the child's user namespace (the host's
    /// root-owned files look owned by the guest's root), under the layer. Returns its fd.
    static func buildRoot(pid: pid_t, rootfs: String, layer: Layer, owner: IDMapping) throws(LaunchFailure) -> CInt {
        guard case .builtByHost(let directory, let tmpfsOptions) = layer else { return -1 }
        func check(_ result: CInt) throws(LaunchFailure) -> CInt {
            guard result >= 0 else { throw LaunchFailure(stage: .mount, errno: Errno(rawValue: -result)) }
            return result
        }
        let userns = open("/proc/\(pid)/ns/user", O_RDONLY | O_CLOEXEC)
        guard userns >= 0 else { throw LaunchFailure(stage: .userNamespace, errno: Errno.current) }
        defer { close(userns) }
        let lower = try check(csys_idmapped_tree(rootfs, userns))
        defer { close(lower) }
        var tmpfs: CInt = -1
        defer { if tmpfs >= 0 { close(tmpfs) } }
        let upper: String
        let work: String
        if let tmpfsOptions {
            tmpfs = try check(csys_tmpfs_tree(tmpfsOptions))
            for name in ["upper", "work"] {
                guard mkdirat(tmpfs, name, 0o755) == 0, fchownat(tmpfs, name, owner.rootUID, owner.rootGID, 0) == 0 else {
                    throw LaunchFailure(stage: .mount, errno: Errno.current)
                }
            }
            upper = "/proc/self/fd/\(tmpfs)/upper"
            work = "/proc/self/fd/\(tmpfs)/work"
        } else if let directory {
            upper = directory + "/upper"
            work = directory + "/work"
        } else {
            return -1
        }
        return try check(csys_overlay_root("/proc/self/fd/\(lower)", upper, work, nil))
    }
}
