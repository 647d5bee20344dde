#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherPosix

/// A sandbox's cgroups: `tether-NAME` under the supervisor's own cgroup in cgroup v2 and in every
/// cgroup v1 hierarchy the host mounts. The sandbox's first process is moved into all of them
/// before it starts, and it then unshares a cgroup namespace, so whatever an init in the sandbox
/// does with cgroups (systemd builds init.scope, system.slice, ...) stays inside the sandbox's
/// own directories and never lands in the host's. Removed, with what the init made in them,
/// after the sandbox ended.
///
/// Limits (`CgroupLimits`: pids and memory by default, cpu when asked for) go to cgroup v2
/// where it has the controller, else to the v1 hierarchy that has it (hybrid hosts bind memory,
/// pids and cpu to v1). The device allow-list goes to the v1 devices hierarchy and, as a
/// program, to the v2 directory (`CgroupDevices`). What none of them can do becomes a warning,
/// never a boot failure.
///
/// The limit files stay root's: `delegate(toUID:gid:)` hands an init in a user namespace only
/// the files it needs to build its own tree below, so the guest can subdivide its limits but
/// never raise them.
///
/// Owns the directories; `remove()` deletes them (rmdir(2): only once no process is left).
public struct Cgroup: Sendable {
    /// The cgroup v2 directory, when the host has cgroup v2.
    public let path: String?
    /// One directory per cgroup v1 hierarchy, keyed by its controllers ("memory", "cpu,cpuacct",
    /// "name=systemd").
    public let v1: [String: String]

    /// A mounted cgroup file system (from /proc/self/mountinfo).
    struct MountPoint {
        var path: String
        /// The directory of the hierarchy this mount shows at `path` (not "/" inside a cgroup namespace).
        var root: String
        /// Controllers (v1 only): "memory", "name=systemd", "cpu", "cpuacct", ...
        var controllers: Set<String>
    }

    static func mounts() -> (v2: MountPoint?, v1: [MountPoint]) {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return (nil, []) }
        var v2: MountPoint?
        var v1: [MountPoint] = []
        for line in text.split(separator: "\n") {
            // "id parent major:minor root mountpoint options [optional...] - fstype source superoptions"
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2 else { continue }
            let fields = halves[0].split(separator: " ")
            let tail = halves[1].split(separator: " ")
            guard fields.count > 4, tail.count >= 3 else { continue }
            let point = MountPoint(path: String(fields[4]), root: String(fields[3]), controllers: [])
            if tail[0] == "cgroup2" {
                if v2 == nil { v2 = point }
            } else if tail[0] == "cgroup" {
                var withControllers = point
                let generic: Set<String> = ["rw", "ro", "relatime", "nosuid", "nodev", "noexec", "clone_children", "noprefix"]
                withControllers.controllers = Set(tail[2].split(separator: ",").map(String.init)).subtracting(generic)
                    .filter { !$0.hasPrefix("release_agent=") }
                // The same hierarchy may be mounted twice; the first mount is enough.
                if !v1.contains(where: { $0.controllers == withControllers.controllers }) { v1.append(withControllers) }
            }
        }
        return (v2, v1)
    }

    /// What the sandbox sees of its cgroups, read-only under /sys/fs/cgroup (the launcher's
    /// `cgroupMounts`): each hierarchy the sandbox has a directory in, under the name the host
    /// mounts it by; on a cgroup2-only host the one hierarchy on /sys/fs/cgroup itself.
    public func guestMounts() -> [(directory: String, type: String, options: String)] {
        let (v2Mount, v1Mounts) = Cgroup.mounts()
        var result: [(directory: String, type: String, options: String)] = []
        if path != nil, let v2Mount {
            if v1.isEmpty && v2Mount.path == "/sys/fs/cgroup" { return [("", "cgroup2", "")] }
            result.append((URL(fileURLWithPath: v2Mount.path).lastPathComponent, "cgroup2", ""))
        }
        for mount in v1Mounts {
            let key = mount.controllers.sorted().joined(separator: ",")
            guard v1.keys.contains(where: { Set($0.split(separator: ",").map(String.init)) == mount.controllers }) else { continue }
            // A named hierarchy without controllers (name=systemd) mounts with "none".
            let options = mount.controllers.allSatisfy { $0.hasPrefix("name=") } ? "none," + key : key
            result.append((URL(fileURLWithPath: mount.path).lastPathComponent, "cgroup", options))
        }
        return result
    }

    /// Where cgroup2 is mounted: `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on
    /// hybrid ones; nil without cgroup v2.
    public static func v2Mount() -> String? { mounts().v2?.path }

    /// This process's cgroup per hierarchy, from /proc/self/cgroup: "" for v2 ("0::PATH"),
    /// the controllers field for v1 ("4:memory:PATH").
    static func ownPaths() -> [String: String] {
        let text = (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? ""
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            result[String(parts[1])] = String(parts[2])
        }
        return result
    }

    /// The directory for `own` (a path in the hierarchy) under a mount that shows `root`.
    static func directory(mount: MountPoint, own: String) -> String {
        var relative = own
        if mount.root != "/" && relative.hasPrefix(mount.root) { relative = String(relative.dropFirst(mount.root.count)) }
        return (mount.path + "/" + relative).replacingOccurrences(of: "//", with: "/")
            .replacingOccurrences(of: "//", with: "/")
    }

    static func join(_ parent: String, _ leaf: String) -> String {
        (parent.hasSuffix("/") ? String(parent.dropLast()) : parent) + "/" + leaf
    }

    /// Creates `tether-NAME-PID` (PID: the supervisor's) in every hierarchy and applies the
    /// limits it can. Returns nil (with the reason in `warnings` when limits were asked for) when
    /// no cgroup could be created. The pid keeps two sandboxes of one name apart: names are
    /// unique per `$TETHER_HOME` only, and two homes (two test runs, two users) share the
    /// host's cgroup tree; a shared directory would put one sandbox's init (systemd) into the
    /// other's cgroups, and the first to stop would take the limits of both.
    public static func create(name: String, limits: CgroupLimits, warnings: inout [String]) -> Cgroup? {
        let (v2Mount, v1Mounts) = mounts()
        let own = ownPaths()
        let leaf = "tether-\(name)-\(getpid())"

        var v2Path: String?
        var v2Parent: String?
        // Why no directory could be made, for the warning when none could (a user that is not
        // root and owns no cgroup gets EACCES everywhere).
        var refusals: [String] = []
        if let v2Mount {
            let parent = directory(mount: v2Mount, own: own[""] ?? "/")
            if mkdir(join(parent, leaf), 0o755) == 0 || errno == EEXIST {
                v2Path = join(parent, leaf)
                v2Parent = parent
            } else {
                refusals.append("mkdir in \(parent): \(Errno.current)")
            }
        }
        var v1: [String: String] = [:]
        for mount in v1Mounts {
            guard let key = own.keys.first(where: { !$0.isEmpty && Set($0.split(separator: ",").map(String.init)) == mount.controllers }),
                  let ownPath = own[key] else { continue }
            let parent = directory(mount: mount, own: ownPath)
            let path = join(parent, leaf)
            guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
                refusals.append("mkdir in \(parent): \(Errno.current)")
                continue
            }
            // A new cpuset cgroup has no CPUs or memory nodes until given its parent's.
            if mount.controllers.contains("cpuset") {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    if let value = try? String(contentsOfFile: parent + "/" + file, encoding: .utf8) {
                        _ = write(value.trimmingCharacters(in: .whitespacesAndNewlines), to: path + "/" + file)
                    }
                }
            }
            v1[key] = path
        }
        guard v2Path != nil || !v1.isEmpty else {
            let asked = [limits.cpusLabel, limits.memoryLabel, limits.pidsLabel].filter { !$0.isEmpty }
                + (limits.devices != nil ? ["the device allow-list"] : [])
            if !asked.isEmpty {
                let why = refusals.isEmpty ? "no cgroup v2 or v1 is mounted" : refusals.prefix(3).joined(separator: "; ")
                warnings.append("\(asked.joined(separator: ", ")) not applied: no cgroup for the sandbox could be made (\(why))")
            }
            return nil
        }
        let cgroup = Cgroup(path: v2Path, v1: v1)
        cgroup.apply(limits, v2Parent: v2Parent, warnings: &warnings)
        return cgroup
    }

    /// Writes every limit of `limits` (before any process is inside); `v2Parent` is the v2
    /// directory's parent, where controllers are enabled for it. Each limit the host cannot set
    /// becomes one warning that names it and says why.
    func apply(_ limits: CgroupLimits, v2Parent: String?, warnings: inout [String]) {
        if let memoryMiB = limits.memoryMiB {
            limit(option: limits.memoryLabel, v2Controller: "memory", v2Parent: v2Parent,
                  v2: [("memory.max", String(memoryMiB << 20))],
                  v1Controller: "memory", v1: [("memory.limit_in_bytes", String(memoryMiB << 20))], warnings: &warnings)
        }
        if let pids = limits.pids {
            // Counts threads as well as processes, in the cgroup and every cgroup below it.
            limit(option: limits.pidsLabel, v2Controller: "pids", v2Parent: v2Parent,
                  v2: [("pids.max", String(pids))], v1Controller: "pids", v1: [("pids.max", String(pids))],
                  warnings: &warnings)
        }
        if let cpus = limits.cpus {
            // `cpus` CPUs' worth of time in every 100 ms period.
            limit(option: limits.cpusLabel, v2Controller: "cpu", v2Parent: v2Parent,
                  v2: [("cpu.max", "\(cpus * 100_000) 100000")],
                  v1Controller: "cpu", v1: [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", String(cpus * 100_000))],
                  warnings: &warnings)
        }
        if let devices = limits.devices { restrictDevices(to: devices, warnings: &warnings) }
    }

    /// Puts the device allow-list everywhere this host takes one: the v1 devices hierarchy
    /// (hybrid and v1 hosts) and a device program on the v2 directory. On a hybrid host both
    /// apply, and the kernel asks both; one of the two is enough, so a warning only says that
    /// neither worked.
    private func restrictDevices(to rules: [DeviceRule], warnings: inout [String]) {
        var reasons: [String] = []
        var applied = false
        if let directory = v1Directory(controller: "devices") {
            if let failure = CgroupDevices.applyV1(rules, in: directory) {
                reasons.append("the cgroup v1 devices hierarchy refused \(failure)")
            } else {
                applied = true
            }
        } else {
            reasons.append("no cgroup v1 devices hierarchy")
        }
        if let path {
            do {
                try CgroupDevices.attachProgram(rules, to: path)
                applied = true
            } catch {
                reasons.append("the cgroup v2 device program: \(error)")
            }
        } else {
            reasons.append("no cgroup v2")
        }
        if !applied { warnings.append("the device allow-list was not applied: " + reasons.joined(separator: "; ")) }
    }

    /// The v1 directory of the hierarchy that has `controller`.
    func v1Directory(controller: String) -> String? {
        v1.first(where: { $0.key.split(separator: ",").contains(Substring(controller)) })?.value
    }

    /// Writes a limit through cgroup v2 when it has the controller, else through the v1
    /// hierarchy that has it; says why in `warnings` when neither worked.
    private func limit(option: String, v2Controller: String, v2Parent: String?, v2: [(String, String)],
                       v1Controller: String, v1 v1Files: [(String, String)], warnings: inout [String]) {
        var reasons: [String] = []
        if let path, let v2Parent {
            let available = (try? String(contentsOfFile: v2Parent + "/cgroup.controllers", encoding: .utf8)) ?? ""
            if available.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains(Substring(v2Controller)) {
                // Enabling a controller for children fails (EBUSY) when the parent is not the
                // root and holds processes of its own (cgroup v2's no-internal-processes rule).
                if let error = Cgroup.write("+" + v2Controller, to: v2Parent + "/cgroup.subtree_control") {
                    reasons.append("enabling \(v2Controller) in \(v2Parent)/cgroup.subtree_control failed (\(error))")
                } else if let failure = Cgroup.writeAll(v2, in: path) {
                    reasons.append("writing \(failure)")
                } else {
                    return
                }
            } else {
                reasons.append("cgroup v2 has no \(v2Controller) controller")
            }
        } else {
            reasons.append("no cgroup v2")
        }
        if let directory = v1Directory(controller: v1Controller) {
            if let failure = Cgroup.writeAll(v1Files, in: directory) {
                reasons.append("the cgroup v1 \(v1Controller) hierarchy refused \(failure)")
            } else {
                return   // applied through cgroup v1 (a hybrid host)
            }
        } else {
            reasons.append("no cgroup v1 \(v1Controller) hierarchy either")
        }
        warnings.append("\(option) was not applied: " + reasons.joined(separator: "; "))
    }

    /// Moves a process into every directory. Fails on cgroup v2 (or, without v2, on the first
    /// v1 hierarchy); a v1 hierarchy that refuses is skipped.
    public func add(_ pid: pid_t) -> Errno? {
        if let path, let error = Cgroup.write(String(pid), to: path + "/cgroup.procs") { return error }
        for (_, directory) in v1 { _ = Cgroup.write(String(pid), to: directory + "/cgroup.procs") }
        return nil
    }

    /// The files of a cgroup v2 directory that a delegatee writes: moving processes and threads
    /// between the cgroups it makes, and enabling controllers for them. Nothing that sets a limit.
    public static let delegatedV2Files = ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"]
    /// The same for a cgroup v1 directory. `release_agent` is not among them: it exists only in
    /// a hierarchy's root directory (never a sandbox's), and the kernel lets only root in the
    /// initial user namespace write it.
    public static let delegatedV1Files = ["cgroup.procs", "tasks", "cgroup.clone_children", "notify_on_release"]

    /// Hands the sandbox's cgroups to the root of a user namespace (host uid `uid`, gid `gid`),
    /// so an init in it (systemd) can create its own cgroups below and move its processes into
    /// them: the directories and `delegatedV2Files`/`delegatedV1Files` change owner. Every limit
    /// file (memory.max, memory.limit_in_bytes, pids.max, devices.*, cpu.*) stays root's, so the
    /// guest cannot raise its own limits; the limits of cgroups it creates below are bounded by
    /// these (the kernel charges every level of the hierarchy).
    ///
    /// Call it before the sandbox's first process starts. A file this kernel does not have
    /// (cgroup.threads before 4.14) is skipped; any other failure is thrown, and what was
    /// changed until then stays changed (the directories go with the sandbox).
    public func delegate(toUID uid: uid_t, gid: gid_t) throws(CgroupDelegationError) {
        if let path { try Cgroup.changeOwner(of: path, files: Cgroup.delegatedV2Files, uid: uid, gid: gid) }
        for directory in v1.values.sorted() {
            try Cgroup.changeOwner(of: directory, files: Cgroup.delegatedV1Files, uid: uid, gid: gid)
        }
    }

    private static func changeOwner(of directory: String, files: [String], uid: uid_t, gid: gid_t) throws(CgroupDelegationError) {
        // AT_SYMLINK_NOFOLLOW: cgroupfs has no links, so a link here is not one of ours.
        if fchownat(AT_FDCWD, directory, uid, gid, AT_SYMLINK_NOFOLLOW) != 0 {
            throw CgroupDelegationError(path: directory, errno: .current)
        }
        for file in files {
            let path = join(directory, file)
            if fchownat(AT_FDCWD, path, uid, gid, AT_SYMLINK_NOFOLLOW) != 0 && errno != ENOENT {
                throw CgroupDelegationError(path: path, errno: .current)
            }
        }
    }

    /// The value of an interface file of the v2 directory, else of the v1 directory whose
    /// hierarchy has `controller` (for tests and `tether ls`).
    public func read(_ file: String, controller: String) -> String? {
        var candidates: [String] = []
        if let path { candidates.append(path + "/" + file) }
        if let directory = v1Directory(controller: controller) {
            candidates.append(directory + "/" + file)
        }
        for candidate in candidates {
            if let text = try? String(contentsOfFile: candidate, encoding: .utf8) {
                return text.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        return nil
    }

    /// Every directory, v2 first.
    public var directories: [String] { (path.map { [$0] } ?? []) + v1.values.sorted() }

    /// Removes the directories and the cgroups an init made inside them, deepest first.
    public func remove() { Cgroup.remove(directories) }

    /// Removes cgroup directories given by path (after a supervisor that knew them was killed).
    /// Only directories named `tether-*` under a cgroup file system are touched.
    public static func remove(_ directories: [String]) {
        for directory in directories where directory.hasPrefix("/sys/fs/cgroup/")
            && (directory.split(separator: "/").last?.hasPrefix("tether-") ?? false) {
            removeTree(directory)
        }
    }

    private static func removeTree(_ directory: String) {
        let children = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for child in children {
            var st = stat()
            let path = directory + "/" + child
            // A cgroup's children are its only subdirectories; its files are the interface.
            if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR { removeTree(path) }
        }
        // EBUSY while a task still counts as a member: processes SIGKILLed with their PID
        // namespace leave their cgroups only as the kernel finishes their exit, which can lag
        // the reaping of the namespace's init on a loaded host. Up to a second, then leave it.
        for _ in 0..<50 {
            if rmdir(directory) == 0 || errno != EBUSY { return }
            usleep(20_000)
        }
    }

    /// Writes (file, value) pairs in order; the first failure as "file: errno", nil when all worked.
    static func writeAll(_ pairs: [(String, String)], in directory: String) -> String? {
        for (file, value) in pairs {
            if let error = write(value, to: directory + "/" + file) { return "\(file): \(error)" }
        }
        return nil
    }

    static func write(_ value: String, to file: String) -> Errno? {
        let fd = open(file, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return .current }
        let owned = OwnedFD(adopting: fd)
        do { try FileIO.writeAll(owned.raw, Array(value.utf8)) } catch { return error }
        return nil
    }
}

/// A cgroup directory or file that could not be handed to a user namespace's root.
public struct CgroupDelegationError: Error, Equatable, Sendable, CustomStringConvertible {
    public var path: String
    public var errno: Errno
    public var description: String { "cannot delegate the cgroup \(path): chown failed: \(errno)" }
}
