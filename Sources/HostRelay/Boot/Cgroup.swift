#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherPosix

/// A sandbox's cgroup v2 directory: created beside (under) the supervisor's own cgroup, the
/// sandbox's first process moved into it before it starts, removed after the sandbox ended.
/// Limits are written only where the host's cgroup v2 has the controller; everything this host
/// cannot do becomes a warning string, never a boot failure.
///
/// Owns the directory; `remove()` deletes it (rmdir(2), which succeeds once it has no process).
public struct Cgroup: Sendable {
    public let path: String

    /// Where cgroup2 is mounted (the first `cgroup2` line of /proc/self/mountinfo): `/sys/fs/cgroup`
    /// on unified hosts, `/sys/fs/cgroup/unified` on hybrid ones.
    public static func v2Mount() -> String? {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            // "... mountpoint options [optional fields] - fstype source superoptions"
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2, halves[1].hasPrefix("cgroup2 ") else { continue }
            let fields = halves[0].split(separator: " ")
            if fields.count > 4 { return String(fields[4]) }
        }
        return nil
    }

    /// This process's cgroup v2 path (the `0::` line of /proc/self/cgroup).
    static func ownPath() -> String {
        let text = (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("0::") {
            return String(line.dropFirst(3))
        }
        return "/"
    }

    /// Creates `tether-NAME` under this process's cgroup and applies the limits it can.
    /// Returns nil (with the reason in `warnings`) when there is no usable cgroup v2.
    public static func create(name: String, cpus: Int?, memoryMiB: Int?, warnings: inout [String]) -> Cgroup? {
        let limits = cpus != nil || memoryMiB != nil
        guard let mount = v2Mount() else {
            if limits { warnings.append("no cgroup v2 on this host: --cpus/--memory were not applied") }
            return nil
        }
        let parent = (mount + ownPath()).replacingOccurrences(of: "//", with: "/")
        let path = parent + "/tether-" + name
        if mkdir(path, 0o755) != 0 && errno != EEXIST {
            let reason = Errno.current
            if limits { warnings.append("cannot create cgroup \(path) (\(reason)): --cpus/--memory were not applied") }
            return nil
        }
        let cgroup = Cgroup(path: path)
        guard limits else { return cgroup }

        let available = Set(((try? String(contentsOfFile: parent + "/cgroup.controllers", encoding: .utf8)) ?? "")
            .split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
        func apply(controller: String, file: String, value: String, option: String) {
            guard available.contains(controller) else {
                warnings.append("\(option) was not applied: cgroup v2 at \(mount) has no \(controller) controller "
                    + "(this host binds it to cgroup v1, a hybrid setup); the sandbox runs without that limit")
                return
            }
            // Controllers must be enabled in the parent's subtree_control before a child can use
            // them; that fails (EBUSY) when the parent has processes of its own and is not the root.
            if let error = write("+\(controller)", to: parent + "/cgroup.subtree_control") {
                warnings.append("\(option) was not applied: enabling \(controller) in \(parent)/cgroup.subtree_control failed (\(error))")
                return
            }
            if let error = write(value, to: path + "/" + file) {
                warnings.append("\(option) was not applied: writing \(file) failed (\(error))")
            }
        }
        if let memoryMiB {
            apply(controller: "memory", file: "memory.max", value: String(memoryMiB * 1024 * 1024), option: "--memory \(memoryMiB)")
        }
        if let cpus {
            // cpu.max "QUOTA PERIOD": `cpus` CPUs' worth of time in every 100 ms.
            apply(controller: "cpu", file: "cpu.max", value: "\(cpus * 100_000) 100000", option: "--cpus \(cpus)")
        }
        return cgroup
    }

    /// Moves a process into this cgroup. C: write(2) to cgroup.procs
    public func add(_ pid: pid_t) -> Errno? {
        Cgroup.write(String(pid), to: path + "/cgroup.procs")
    }

    /// Removes the directory and the cgroups an init made inside it (systemd's init.scope,
    /// system.slice, ...), deepest first; the kernel refuses (EBUSY) any that still has a process.
    public func remove() { Cgroup.removeTree(path) }

    private static func removeTree(_ directory: String) {
        let children = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for child in children {
            var st = stat()
            let path = directory + "/" + child
            // A cgroup's children are its only subdirectories; its files are the interface.
            if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR { removeTree(path) }
        }
        rmdir(directory)
    }

    /// Whether any process is in it (cgroup.procs is not empty).
    public var isPopulated: Bool {
        let text = (try? String(contentsOfFile: path + "/cgroup.procs", encoding: .utf8)) ?? ""
        return !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
    }

    static func write(_ value: String, to file: String) -> Errno? {
        let fd = open(file, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return .current }
        let owned = OwnedFD(adopting: fd)
        do { try FileIO.writeAll(owned.raw, Array(value.utf8)) } catch { return error }
        return nil
    }
}
