#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherPosix

/// Which host ids a sandbox's ids are: the maps written for its user namespace.
///
/// Run as root, every sandbox gets 65,536 ids of its own from the block Tether reserves,
/// host ids 0x6000_0000 (1,610,612,736) onwards in slots of 65,536 (4,096 slots, ending below
/// 0x7000_0000). A slot is held by the sandbox's supervisor through a lock (`SlotLock`), so no
/// two live sandboxes share one, and is remembered in the sandbox's directory, so a persistent
/// layer keeps the owners it was written with. Run as an ordinary user (rootless), guest root
/// is the user's own uid, plus the user's `/etc/subuid` range when `newuidmap` can map it.
public struct IDMapping: Equatable, Sendable {
    public struct Range: Equatable, Sendable {
        public var inside: UInt32
        public var outside: UInt32
        public var count: UInt32
    }

    public var uids: [Range]
    public var gids: [Range]
    /// Rootless maps written by the user itself must deny setgroups(2) first.
    public var denySetgroups: Bool

    /// The host uid and gid of the guest's root.
    public var rootUID: uid_t { uids.first { $0.inside == 0 }?.outside ?? 65534 }
    public var rootGID: gid_t { gids.first { $0.inside == 0 }?.outside ?? 65534 }
    /// Whether guest gid 5 (tty, devpts' default group) exists inside.
    public var mapsTTYGroup: Bool { gids.contains { $0.inside <= 5 && 5 < $0.inside + $0.count } }

    static func text(_ ranges: [Range]) -> String {
        ranges.map { "\($0.inside) \($0.outside) \($0.count)\n" }.joined()
    }

    public static let slotBase: UInt32 = 0x6000_0000
    public static let slotSize: UInt32 = 65_536
    public static let slotCount: UInt32 = 4_096

    /// The root-run sandbox's map for `slot`.
    public static func slot(_ slot: UInt32) -> IDMapping {
        let range = Range(inside: 0, outside: slotBase + slot * slotSize, count: slotSize)
        return IDMapping(uids: [range], gids: [range], denySetgroups: false)
    }
}

/// A slot of the reserved id block, locked for as long as this process holds it
/// (`/run/tether/idmap/SLOT.lock`, flock(2): the lock goes when the supervisor does, however
/// it ends, so a crashed sandbox never keeps its ids).
public final class SlotLock: Sendable {
    public let slot: UInt32
    private let fd: CInt

    public static let directory = "/run/tether/idmap"

    init(slot: UInt32, fd: CInt) {
        self.slot = slot
        self.fd = fd
    }

    deinit { Glibc.close(fd) }

    /// Takes `preferred` when it is free, else the first free slot after it.
    static func acquire(preferred: UInt32) throws(BootFailure) -> SlotLock {
        for dir in ["/run/tether", directory] where mkdir(dir, 0o700) != 0 && errno != EEXIST {
            throw BootFailure(stage: .userNamespace, errno: errno, message: "cannot create \(dir): \(Errno.current)")
        }
        for offset in 0..<IDMapping.slotCount {
            let slot = (preferred + offset) % IDMapping.slotCount
            let fd = open("\(directory)/\(slot).lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else {
                throw BootFailure(stage: .userNamespace, errno: errno, message: "cannot open the id slot lock \(directory)/\(slot).lock: \(Errno.current)")
            }
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { return SlotLock(slot: slot, fd: fd) }
            Glibc.close(fd)
        }
        throw BootFailure(stage: .userNamespace, errno: EAGAIN,
                          message: "all \(IDMapping.slotCount) id slots are in use by running sandboxes",
                          hint: "stop a sandbox first")
    }
}

/// Setting up a sandbox's user namespace from the host side.
enum UserNamespace {
    /// The slot locks this process holds: the supervisor keeps its sandbox's for its whole life.
    nonisolated(unsafe) static var held: [SlotLock] = []

    /// Where the sandbox's slot number is remembered (root-run sandboxes only).
    static func slotFile(_ paths: SandboxPaths) -> String { paths.directory.appendingPathComponent("id-slot").path }

    /// The maps for a sandbox booted by this process, locking a slot when root.
    static func mapping(for config: SandboxConfig, paths: SandboxPaths) throws(BootFailure) -> (mapping: IDMapping, previousRoot: uid_t?) {
        if geteuid() != 0 { return (try rootlessMapping(), nil) }
        let saved = (try? FileIO.readFile(slotFile(paths), limit: 32))
            .flatMap { UInt32(String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) }
            .flatMap { $0 < IDMapping.slotCount ? $0 : nil }
        let lock = try SlotLock.acquire(preferred: saved ?? hashSlot(config.name))
        held.append(lock)
        if saved != lock.slot {
            let fd = open(slotFile(paths), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
            if fd >= 0 {
                try? FileIO.writeAll(fd, Array("\(lock.slot)\n".utf8))
                Glibc.close(fd)
            }
        }
        return (IDMapping.slot(lock.slot), saved.map { IDMapping.slot($0).rootUID })
    }

    /// A stable first guess per name, so a name keeps its slot while it is free.
    static func hashSlot(_ name: String) -> UInt32 {
        var hash: UInt32 = 2_166_136_261
        for byte in name.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        return hash % IDMapping.slotCount
    }

    /// The invoking user as guest root, and its subordinate range when newuidmap can map it.
    static func rootlessMapping() throws(BootFailure) -> IDMapping {
        try checkUnprivilegedAllowed()
        let uid = getuid()
        let gid = getgid()
        var mapping = IDMapping(uids: [.init(inside: 0, outside: uid, count: 1)],
                                gids: [.init(inside: 0, outside: gid, count: 1)], denySetgroups: true)
        if HostProgram.find("newuidmap") != nil, HostProgram.find("newgidmap") != nil,
           // Both files are keyed by the user (name or uid): newgidmap checks /etc/subgid for the
           // user, not for its group.
           let subuid = subordinate("/etc/subuid", user: uid), let subgid = subordinate("/etc/subgid", user: uid) {
            mapping.uids.append(.init(inside: 1, outside: subuid.start, count: min(subuid.count, 65_535)))
            mapping.gids.append(.init(inside: 1, outside: subgid.start, count: min(subgid.count, 65_535)))
            mapping.denySetgroups = false
        }
        return mapping
    }

    /// A typed error naming the setting when this host forbids unprivileged user namespaces.
    static func checkUnprivilegedAllowed() throws(BootFailure) {
        func value(_ path: String) -> String? {
            (try? FileIO.readFile(path, limit: 64)).map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        if value("/proc/sys/kernel/unprivileged_userns_clone") == "0" {
            throw BootFailure(stage: .userNamespace, errno: EPERM,
                              message: "this host does not allow unprivileged user namespaces (kernel.unprivileged_userns_clone = 0)",
                              hint: "sysctl -w kernel.unprivileged_userns_clone=1, or run as root")
        }
        if value("/proc/sys/user/max_user_namespaces") == "0" {
            throw BootFailure(stage: .userNamespace, errno: ENOSPC,
                              message: "this host allows no user namespaces (user.max_user_namespaces = 0)",
                              hint: "sysctl -w user.max_user_namespaces=15000, or run as root")
        }
        if value("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1" {
            throw BootFailure(stage: .userNamespace, errno: EPERM,
                              message: "AppArmor restricts unprivileged user namespaces on this host (kernel.apparmor_restrict_unprivileged_userns = 1)",
                              hint: "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile allowing userns for tether, or run as root")
        }
    }

    /// The first range of `user` (its uid or its name) in /etc/subuid or /etc/subgid.
    static func subordinate(_ file: String, user: uid_t) -> (start: UInt32, count: UInt32)? {
        guard let bytes = try? FileIO.readFile(file, limit: 1 << 20) else { return nil }
        var names: Set<String> = ["\(user)"]
        if let entry = getpwuid(user) { names.insert(String(cString: entry.pointee.pw_name)) }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: ":")
            guard fields.count == 3, names.contains(String(fields[0])),
                  let start = UInt32(fields[1]), let count = UInt32(fields[2]), count > 0 else { continue }
            return (start, count)
        }
        return nil
    }


    /// Writes the child's maps (it waits for "go" meanwhile): directly as root or for a single
    /// id; through newuidmap/newgidmap (setuid helpers that check /etc/subuid) for ranges.
    static func writeMaps(pid: pid_t, _ mapping: IDMapping) throws(LaunchFailure) {
        let proc = "/proc/\(pid)"
        if mapping.denySetgroups { try write("deny", to: "\(proc)/setgroups") }
        if geteuid() != 0 && mapping.uids.count > 1 {
            try runHelper("newuidmap", pid: pid, mapping.uids)
            try runHelper("newgidmap", pid: pid, mapping.gids)
            return
        }
        try write(IDMapping.text(mapping.uids), to: "\(proc)/uid_map")
        try write(IDMapping.text(mapping.gids), to: "\(proc)/gid_map")
    }

    private static func write(_ text: String, to path: String) throws(LaunchFailure) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw LaunchFailure(stage: .userNamespace, errno: Errno.current) }
        defer { Glibc.close(fd) }
        do { try FileIO.writeAll(fd, Array(text.utf8)) } catch { throw LaunchFailure(stage: .userNamespace, errno: error) }
    }

    private static func runHelper(_ name: String, pid: pid_t, _ ranges: [IDMapping.Range]) throws(LaunchFailure) {
        guard let path = HostProgram.find(name) else { throw LaunchFailure(stage: .userNamespace, errno: Errno(rawValue: ENOENT)) }
        let status = HostProgram.run([path, "\(pid)"] + ranges.flatMap { ["\($0.inside)", "\($0.outside)", "\($0.count)"] })
        guard status == 0 else { throw LaunchFailure(stage: .userNamespace, errno: Errno(rawValue: EPERM)) }
    }

    /// Gives a persistent layer written under another slot the ids of this one (lchown of
    /// every entry whose owner lies in the old range; what lies outside is left alone).
    static func shiftOwnership(of directory: String, from oldRoot: uid_t, to newRoot: uid_t) {
        guard oldRoot != newRoot else { return }
        func shifted(_ id: UInt32) -> UInt32 {
            id >= oldRoot && id - oldRoot < IDMapping.slotSize ? id - oldRoot + newRoot : id
        }
        var paths = [directory]
        if let walker = FileManager.default.enumerator(atPath: directory) {
            for case let relative as String in walker { paths.append(directory + "/" + relative) }
        }
        for path in paths {
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }
            let mode = st.st_mode
            _ = lchown(path, shifted(st.st_uid), shifted(st.st_gid))
            // chown(2) clears set-id bits; give them back, as they were written.
            if (mode & S_IFMT) != S_IFLNK && (mode & (S_ISUID | S_ISGID)) != 0 { _ = chmod(path, mode & 0o7777) }
        }
    }
}
