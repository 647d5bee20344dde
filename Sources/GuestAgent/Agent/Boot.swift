#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix

/// A boot step that failed. As PID 1 the agent writes it to `Boot.errorPath` and exits.
public struct BootError: Error, Equatable {
    /// Which step: `signals`, `mount /proc`, `mknod /dev/null`, `hostname`, `listen`, `init`, ...
    public var stage: String
    public var errno: CInt
    public var message: String

    public init(stage: String, errno: CInt, message: String) {
        self.stage = stage
        self.errno = errno
        self.message = message
    }

    /// `{"stage": ..., "errno": ..., "message": ...}` on one line.
    public var json: String {
        "{\"stage\": \(Self.quote(stage)), \"errno\": \(errno), \"message\": \(Self.quote(message))}"
    }

    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

/// PID 1 set-up: the API file systems, a minimal /dev, the host name, and the boot error
/// report. Runs on the main thread before the event loop exists.
///
/// Where a boot error goes: `/.tether/boot-error.json` in the guest's root file system. The
/// namespace backend sees that path inside the rootfs directory it booted, and the krun
/// backend inside the virtio-fs root it shares; /run would not do, it is a tmpfs the host
/// cannot see. The same JSON is also written to stderr (the console) after
/// `tether-agent: boot failed:`, for read-only roots.
public enum Boot {
    public static let errorDirectory = "/.tether"
    public static let errorPath = "/.tether/boot-error.json"

    /// One mount of the boot sequence.
    struct Mount {
        var target: String
        var type: String
        var flags: UInt
        var data: String
        /// Without it the agent cannot work: a failure ends the boot.
        var essential: Bool
    }

    static let nosuid = UInt(MS_NOSUID)
    static let nodev = UInt(MS_NODEV)
    static let noexec = UInt(MS_NOEXEC)

    static let proc = Mount(target: "/proc", type: "proc", flags: nosuid | nodev | noexec, data: "", essential: true)
    static let sys = Mount(target: "/sys", type: "sysfs", flags: nosuid | nodev | noexec, data: "", essential: false)
    static let dev = Mount(target: "/dev", type: "tmpfs", flags: nosuid | noexec, data: "mode=0755,size=4m", essential: true)
    static let pts = Mount(target: "/dev/pts", type: "devpts", flags: nosuid | noexec,
                           data: "newinstance,ptmxmode=0666,mode=0620,gid=5", essential: false)
    static let shm = Mount(target: "/dev/shm", type: "tmpfs", flags: nosuid | nodev, data: "mode=1777", essential: false)
    static let tmp = Mount(target: "/tmp", type: "tmpfs", flags: nosuid | nodev, data: "mode=1777", essential: false)
    static let run = Mount(target: "/run", type: "tmpfs", flags: nosuid | nodev, data: "mode=0755", essential: false)

    /// What was mounted, in order, for the unmount at power-off.
    nonisolated(unsafe) static var mounted: [String] = []

    /// Mounts /proc first (everything else may need it), unless a procfs of this PID
    /// namespace is already there: the early-init constructor (csys_early_init.h) mounts it
    /// before the Swift runtime starts, and the namespace backend may mount it before exec.
    /// Mounting again would only stack a second procfs over the first.
    static func mountProc() throws(BootError) {
        if procIsOurs() {
            if csys_early_proc_mounted() != 0 { mounted.append(proc.target) }
            return
        }
        try mount(proc)
    }

    /// /proc/self names PID 1 only in a procfs of the agent's own PID namespace (one mounted
    /// for a parent namespace shows the agent's PID there).
    static func procIsOurs() -> Bool {
        var buffer = [CChar](repeating: 0, count: 16)
        let count = readlink("/proc/self", &buffer, buffer.count - 1)
        return count == 1 && buffer[0] == CChar(UInt8(ascii: "1"))
    }

    /// The rest of the PID 1 file systems. With `minimalDev`, a tmpfs /dev with a handful of
    /// nodes (not the host's devices), /dev/pts as a new devpts instance and /dev/shm;
    /// with `tmp`, a tmpfs /tmp.
    ///
    /// /sys and /dev that are already there are kept: the namespace backend builds them before
    /// the agent runs (read-only, masked, the host's device nodes bound: inside a user
    /// namespace the agent could neither make device nodes nor mask what it mounts itself).
    static func mountRest(minimalDev: Bool, tmp mountTmp: Bool) throws(BootError) {
        try mountSysUnlessPresent()
        if minimalDev && !devIsPrepared() {
            try mount(dev)
            try populateDev()
            try mount(pts)
            try mount(shm)
        }
        if mountTmp { try mount(tmp) }
        try mount(run)
    }

    static func mountSysUnlessPresent() throws(BootError) {
        if !isMountPoint("/sys") { try mount(sys) }
    }

    /// A /dev with its own devpts instance: what the namespace backend leaves (a VM's kernel
    /// may mount devtmpfs on /dev, but never devpts under it).
    static func devIsPrepared() -> Bool {
        isMountPoint("/dev") && access("/dev/pts/ptmx", F_OK) == 0 && access("/dev/null", F_OK) == 0
    }

    /// Whether `path` is the root of a mount (its device differs from its parent's).
    static func isMountPoint(_ path: String) -> Bool {
        var own = stat()
        var parent = stat()
        guard lstat(path, &own) == 0, lstat(path + "/..", &parent) == 0 else { return false }
        return own.st_dev != parent.st_dev
    }

    static func mount(_ m: Mount) throws(BootError) {
        if Glibc.mkdir(m.target, 0o755) != 0 && errno != EEXIST {
            let error = Errno.current
            if m.essential { throw BootError(stage: "mkdir \(m.target)", errno: error.rawValue, message: "cannot create \(m.target): \(error)") }
            Log.warning("cannot create \(m.target): \(error)")
            return
        }
        if Glibc.mount(m.type, m.target, m.type, m.flags, m.data.isEmpty ? nil : m.data) != 0 {
            let error = Errno.current
            if m.essential {
                throw BootError(stage: "mount \(m.target)", errno: error.rawValue, message: "cannot mount \(m.type) on \(m.target): \(error)")
            }
            Log.warning("cannot mount \(m.type) on \(m.target): \(error)")
            return
        }
        mounted.append(m.target)
    }

    /// Device nodes of the minimal /dev (character devices of the memory and tty drivers).
    static let nodes: [(name: String, major: UInt32, minor: UInt32, mode: mode_t)] = [
        ("null", 1, 3, 0o666), ("zero", 1, 5, 0o666), ("full", 1, 7, 0o666),
        ("random", 1, 8, 0o666), ("urandom", 1, 9, 0o666), ("tty", 5, 0, 0o666), ("console", 5, 1, 0o600),
    ]
    static let links: [(name: String, target: String)] = [
        ("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
    ]

    private static func populateDev() throws(BootError) {
        let oldMask = umask(0)
        defer { umask(oldMask) }
        for node in nodes {
            let path = "/dev/" + node.name
            if mknod(path, S_IFCHR | node.mode, csys_makedev(node.major, node.minor)) != 0 && errno != EEXIST {
                let error = Errno.current
                // Without /dev/null nothing can be spawned with stdin "none": that one is essential.
                if node.name == "null" {
                    throw BootError(stage: "mknod /dev/null", errno: error.rawValue, message: "cannot create /dev/null: \(error)")
                }
                Log.warning("cannot create \(path): \(error)")
            }
        }
        for link in links where symlink(link.target, "/dev/" + link.name) != 0 && errno != EEXIST {
            Log.warning("cannot link /dev/\(link.name): \(Errno.current)")
        }
        for dir in ["/dev/pts", "/dev/shm"] where Glibc.mkdir(dir, 0o755) != 0 && errno != EEXIST {
            Log.warning("cannot create \(dir): \(Errno.current)")
        }
    }

    /// C: sethostname(2)
    static func setHostname(_ name: String) throws(BootError) {
        let bytes = Array(name.utf8)
        if sethostname(name, bytes.count) != 0 {
            let error = Errno.current
            throw BootError(stage: "hostname", errno: error.rawValue, message: "cannot set the host name to \(name): \(error)")
        }
    }

    /// The first line of /etc/hostname, if the image has one.
    static func configuredHostname() -> String? {
        guard let bytes = try? FileIO.readFile("/etc/hostname", limit: 256) else { return nil }
        let line = String(decoding: bytes, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
        let name = line.filter { $0 != " " && $0 != "\t" && $0 != "\r" }
        return name.isEmpty || name.utf8.count > 64 ? nil : name
    }

    /// Opens /dev/null on any of fds 0-2 that is closed, so no descriptor the agent opens
    /// later lands there by accident (a kernel may start init with none of them).
    static func ensureStandardDescriptors() {
        for fd in CInt(0)...2 where fcntl(fd, F_GETFD) < 0 && errno == EBADF {
            let opened = open("/dev/null", O_RDWR)
            if opened >= 0 && opened != fd {
                let spare = OwnedFD(adopting: opened)   // only its dup2 copy stays
                _ = dup2(spare.raw, fd)
            }
        }
    }

    /// Whether this is the machine's own PID namespace (a VM) rather than a child one (the
    /// namespace backend): only the initial namespace has kthreadd, PID 2 with parent 0.
    /// Needs /proc.
    static func isInitialPIDNamespace() -> Bool {
        guard let bytes = try? FileIO.readFile("/proc/2/status", limit: 4096) else { return false }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        return lines.contains("Name:\tkthreadd") && lines.contains("PPid:\t0")
    }

    /// Records a failed boot where the host can read it (see the type's comment) and on stderr.
    static func report(_ error: BootError) {
        Log.info("boot failed: \(error.json)")
        _ = Glibc.mkdir(errorDirectory, 0o755)
        let fd = open(errorPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        let file = OwnedFD(adopting: fd)
        try? FileIO.writeAll(file.raw, Array((error.json + "\n").utf8))
    }

    /// Removes a report left by an earlier boot of the same root.
    static func clearStaleReport() { _ = unlink(errorPath) }

    /// Before power-off: flush, unmount what boot mounted (lazily: sessions are gone but a
    /// straggler may hold a file), and remount the root read-only. Best effort throughout.
    static func unmountForPowerOff() {
        sync()
        for target in mounted.reversed() { _ = umount2(target, CInt(MNT_DETACH)) }
        _ = Glibc.mount("", "/", nil, UInt(MS_REMOUNT | MS_RDONLY), nil)
        sync()
    }
}
