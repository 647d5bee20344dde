#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import Foundation
import TestSupport
@testable import TetherBoot
import Testing

/// The limits every namespace sandbox gets (pids, memory, the device allow-list), checked from
/// the host through the sandbox's cgroup files and from inside the guest; the device program and
/// the delegation of a cgroup to a user namespace's root, checked on cgroups made for the test.
@Suite(.serialized) struct CgroupLimitTests {
    let sandboxes = Sandboxes(home: TetherHome(root: Fixtures.temporaryDirectory("cg")),
                              supervisorExecutable: Binaries.product("tether-sandbox").path)

    func config(_ name: String, rootfs: String? = nil, _ configure: (inout SandboxConfig) -> Void = { _ in }) throws -> SandboxConfig {
        var config = SandboxConfig(name: name, rootfs: try rootfs ?? Fixtures.busyboxRootfs())
        configure(&config)
        return config
    }

    static let allowListLines = ["c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                                 "c 5:0 rwm", "c 5:2 rwm", "c 136:* rwm"]

    // MARK: what a sandbox gets

    @Test func defaultsFillWhatTheConfigLeavesOut() {
        var config = SandboxConfig(name: "x", rootfs: "/")
        let defaults = CgroupLimits(config)
        #expect(defaults.pids == 4096)
        #expect(defaults.memoryMiB == 1024)
        #expect(defaults.cpus == nil)
        #expect(defaults.devices == DeviceRule.sandboxDefaults)
        #expect(defaults.pidsLabel.hasPrefix("the default pids limit (4096"))

        config.pidsLimit = 50
        config.memoryMiB = 256
        config.cpus = 2
        let given = CgroupLimits(config)
        #expect(given.pids == 50 && given.memoryMiB == 256 && given.cpus == 2)
        #expect(given.pidsLabel == "--pids 50")
        #expect(given.memoryLabel == "--memory 256")
        #expect(CgroupLimits(memoryMiB: 64, pids: 20).memoryLabel == "a memory limit of 64 MiB")
        #expect(CgroupLimits(memoryMiB: 64, pids: 20).pidsLabel == "a pids limit of 20")
    }

    @Test func allowListIsWrittenInTheKernelsSyntax() {
        #expect(DeviceRule.sandboxDefaults.map(\.description) == Self.allowListLines)
        #expect(DeviceRule(.block, nil, nil, .mknod).description == "b *:* m")
        #expect(DeviceRule(.character, 4, 1, [.read, .write]).description == "c 4:1 rw")
    }

    /// Each limit the host cannot set is one warning naming it (the option given, or the
    /// default) and why; what could be set is set. Plain directories stand in for cgroup v1
    /// ones: a file that is there takes the value, one that is not refuses it (ENOENT).
    @Test func warningsNameEachLimitTheHostCannotSetAndWhy() throws {
        let root = Fixtures.temporaryDirectory("cgwarn")
        defer { try? FileManager.default.removeItem(at: root) }
        let pids = root.appendingPathComponent("pids").path
        let memory = root.appendingPathComponent("memory").path
        let devices = root.appendingPathComponent("devices").path
        for directory in [pids, memory, devices] { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        #expect(FileManager.default.createFile(atPath: pids + "/pids.max", contents: nil))
        #expect(FileManager.default.createFile(atPath: devices + "/devices.deny", contents: nil))
        // devices.allow cannot be opened for writing (EISDIR): the list is refused part-way.
        try FileManager.default.createDirectory(atPath: devices + "/devices.allow", withIntermediateDirectories: false)

        var config = SandboxConfig(name: "x", rootfs: "/")
        config.cpus = 2
        let cgroup = Cgroup(path: nil, v1: ["pids": pids, "memory": memory, "devices": devices])
        var warnings: [String] = []
        cgroup.apply(CgroupLimits(config), v2Parent: nil, warnings: &warnings)
        #expect(try String(contentsOfFile: pids + "/pids.max", encoding: .utf8) == "4096")
        #expect(warnings == [
            "the default memory limit (1024 MiB; --memory sets another) was not applied: no cgroup v2; "
                + "the cgroup v1 memory hierarchy refused memory.limit_in_bytes: ENOENT (No such file or directory)",
            "--cpus 2 was not applied: no cgroup v2; no cgroup v1 cpu hierarchy either",
            "the device allow-list was not applied: the cgroup v1 devices hierarchy refused devices.allow: "
                + "EISDIR (Is a directory); no cgroup v2",
        ])
    }

    /// A default sandbox: pids.max 4096, the memory default and only the allowed devices in its
    /// cgroups (or a warning naming each limit the host could not set), and the guest sees its
    /// cgroups as the root of its cgroup namespace.
    @Test(.timeLimit(.minutes(5)))
    func defaultSandboxGetsPidsMemoryAndDeviceLimits() throws {
        try Fixtures.requireRoot()
        let state = try sandboxes.boot(try config("cgdefault"))
        defer { _ = try? sandboxes.stop("cgdefault", graceMs: 1_000) }
        let directories = state.cgroups ?? []
        #expect(!directories.isEmpty, "no cgroup; warnings: \(state.warnings)")

        expectLimit(state, file: ["pids.max"], equals: "4096", warning: "the default pids limit")
        expectLimit(state, file: ["memory.max", "memory.limit_in_bytes"], equals: String(1024 << 20),
                    warning: "the default memory limit")
        let listed = Self.value(of: ["devices.list"], in: directories)
        if let listed {
            #expect(listed.split(separator: "\n").map(String.init) == Self.allowListLines)
        }
        // cgroup v2 has no devices files: the list is a program attached to the directory.
        let v2 = directories.first { Self.isV2($0) }
        if let v2 {
            #expect(CgroupDevices.programCount(on: v2) == 1, "no device program on \(v2)")
        }
        if listed == nil && v2 == nil {
            #expect(state.warnings.contains { $0.hasPrefix("the device allow-list was not applied") }, "\(state.warnings)")
        }

        let link = try AgentLink(socketPath: state.agentSocket)
        // Every hierarchy shows "/": the sandbox's cgroups are the root of its cgroup namespace,
        // nothing of the host's tree above them is visible.
        let cgroups = try link.exec(["cat", "/proc/self/cgroup"]).stdout
        let paths = cgroups.split(separator: "\n").map { $0.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).last ?? "" }
        #expect(!paths.isEmpty && paths.allSatisfy { $0 == "/" }, "/proc/self/cgroup in the guest:\n\(cgroups)")
        // What the guest needs still works: /dev/null, /dev/urandom, a pseudo-terminal.
        let devices = try link.exec(["sh", "-c", "echo x > /dev/null && head -c 8 /dev/urandom | wc -c"])
        #expect(devices.stdout == "8\n", "\(devices.stdout)\(devices.stderr)")
    }

    /// `--pids` and `--memory` replace the defaults, and a fork loop stops at the pids limit
    /// while the agent keeps serving.
    @Test(.timeLimit(.minutes(5)))
    func pidsLimitStopsAForkLoopAndTheAgentLives() throws {
        try Fixtures.requireRoot()
        let state = try sandboxes.boot(try config("cgpids") {
            $0.memoryMiB = 256
            $0.pidsLimit = 50
        })
        defer { _ = try? sandboxes.stop("cgpids", graceMs: 1_000) }
        expectLimit(state, file: ["memory.max", "memory.limit_in_bytes"], equals: String(256 << 20), warning: "--memory 256")
        guard expectLimit(state, file: ["pids.max"], equals: "50", warning: "--pids 50") else { return }

        let link = try AgentLink(socketPath: state.agentSocket)
        // Each `sleep &` is a fork; at the limit fork(2) fails with EAGAIN and busybox sh gives up.
        let loop = try link.exec(["sh", "-c", "i=0; while [ $i -lt 200 ]; do sleep 1000 & i=$((i+1)); done"])
        #expect(loop.stderr.contains("can't fork") || loop.stderr.contains("Resource temporarily unavailable"),
                "the fork loop: \(loop.stderr.suffix(500)) \(String(describing: loop.exited))")
        let events = Self.value(of: ["pids.events"], in: state.cgroups ?? []) ?? ""
        let refused = events.split(separator: "\n").first { $0.hasPrefix("max ") }.flatMap { Int($0.dropFirst(4)) } ?? 0
        #expect(refused > 0, "pids.events: \(events)")

        // The agent is alive and serves: the loop's shell is gone, so one fork is free again.
        let sleeping = try link.exec(["pidof", "sleep"])
        #expect(sleeping.exited?.code == 0, "\(sleeping.stdout)\(sleeping.stderr)\(String(describing: sleeping.failed))")
        let count = sleeping.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }).count
        // At most the limit less the agent and the loop's shell.
        #expect(count > 0 && count <= 48, "\(count) sleeps started under pids.max 50")
        #expect(try link.exec(["killall", "sleep"]).exited?.code == 0)
        #expect(try link.exec(["echo", "alive"]).stdout == "alive\n")
    }

    /// Device nodes made on the host and visible in the guest's tree: the allowed one opens,
    /// one outside the list (1:11, the kernel log) does not. Nodes are made on the host so
    /// the check does not depend on mknod inside.
    @Test(.timeLimit(.minutes(5)))
    func deviceOutsideTheListCannotBeOpened() throws {
        try Fixtures.requireRoot()
        let rootfs = try Fixtures.busyboxRootfs()
        let copy = Fixtures.temporaryDirectory("cgdev").appendingPathComponent("rootfs").path
        defer { try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: copy).deletingLastPathComponent().path) }
        let copied = try Fixtures.run(["/bin/cp", "-a", rootfs, copy])
        guard copied.status == 0 else { Issue.record("cp -a: \(copied.stderr)"); return }
        try FileManager.default.createDirectory(atPath: copy + "/devtest", withIntermediateDirectories: true)
        #expect(mknod(copy + "/devtest/kmsg", S_IFCHR | 0o666, csys_makedev(1, 11)) == 0)
        #expect(mknod(copy + "/devtest/null", S_IFCHR | 0o666, csys_makedev(1, 3)) == 0)

        let state = try sandboxes.boot(try config("cgdev", rootfs: copy))
        defer { _ = try? sandboxes.stop("cgdev", graceMs: 1_000) }
        let link = try AgentLink(socketPath: state.agentSocket)
        // `exec 3< FILE` only opens it (reading /dev/kmsg one byte at a time fails by itself).
        let null = try link.exec(["sh", "-c", "exec 3< /devtest/null"])
        let kmsg = try link.exec(["sh", "-c", "exec 3< /devtest/kmsg"])
        #expect(kmsg.exited?.code != 0, "the guest opened /dev/kmsg's device")
        if null.exited?.code == 0 {
            // The allowed node opens, so the mount does not forbid devices: the refusal is the
            // device cgroup's (EPERM).
            #expect(kmsg.stderr.contains("Operation not permitted"), "\(kmsg.stderr)")
        }
    }

    // MARK: the guest cannot raise its limits (needs the user namespace)

    /// From inside: the limit files cannot be written, wherever the guest finds or mounts them,
    /// and a cgroup v1 memory hierarchy cannot be mounted; the host still reads the limits it set.
    /// Guest root is host root until the sandbox runs in a user namespace (issue 14, item 1); until
    /// then this test is cancelled.
    @Test(.timeLimit(.minutes(5)))
    func guestCannotRaiseItsLimits() throws {
        try Fixtures.requireRoot()
        let state = try sandboxes.boot(try config("cgraise") {
            $0.memoryMiB = 64
            $0.pidsLimit = 100
        })
        defer { _ = try? sandboxes.stop("cgraise", graceMs: 1_000) }
        let link = try AgentLink(socketPath: state.agentSocket)
        let uidMap = try link.exec(["cat", "/proc/self/uid_map"]).stdout
        if uidMap.split(whereSeparator: { $0 == " " || $0 == "\n" }) == ["0", "0", "4294967295"] {
            try Test.cancel("the guest is host root (uid_map \(uidMap.trimmingCharacters(in: .whitespacesAndNewlines))): needs the sandbox's user namespace")
        }
        let attempt = try link.exec(["sh", "-c", """
            for f in /sys/fs/cgroup/pids.max /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids/pids.max \
                     /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/devices/devices.allow; do
                [ -e "$f" ] && (echo max > "$f") 2>/dev/null && echo "wrote $f"
            done
            d=$(mktemp -d)
            if mount -t cgroup -o memory none "$d" 2>/dev/null; then
                echo "mounted v1 memory"
                (echo -1 > "$d/memory.limit_in_bytes") 2>/dev/null && echo "raised v1 memory"
                umount "$d"
            fi
            if mount -t cgroup -o pids none "$d" 2>/dev/null; then
                (echo max > "$d/pids.max") 2>/dev/null && echo "raised v1 pids"
                umount "$d"
            fi
            if mount -t cgroup2 none "$d" 2>/dev/null; then
                (echo max > "$d/pids.max") 2>/dev/null && echo "raised v2 pids"
                (echo max > "$d/memory.max") 2>/dev/null && echo "raised v2 memory"
                umount "$d"
            fi
            true
            """])
        let lines = attempt.stdout.split(separator: "\n")
        #expect(!lines.contains { $0.hasPrefix("wrote") || $0.hasPrefix("raised") }, "the guest: \(attempt.stdout)")
        // A guest command has no CAP_SYS_ADMIN (Docker's default set), so it cannot mount a
        // cgroup hierarchy at all. (An init handed PID 1 may: systemd mounts its hierarchies, and
        // the limits it finds there are still not its to write.)
        #expect(!lines.contains("mounted v1 memory"), "a guest command mounted a cgroup v1 memory hierarchy")
        expectLimit(state, file: ["pids.max"], equals: "100", warning: "--pids 100")
        expectLimit(state, file: ["memory.max", "memory.limit_in_bytes"], equals: String(64 << 20), warning: "--memory 64")
    }

    // MARK: the device program on its own (cgroup v2)

    /// The cgroup v2 device program alone, on a cgroup made for the test: this host's v1 devices
    /// cgroup of the test process allows everything, so whatever is refused is the program's.
    @Test(.timeLimit(.minutes(2)))
    func deviceProgramRefusesWhatTheListLacks() throws {
        try Fixtures.requireRoot()
        guard Cgroup.v2Mount() != nil else { try Test.cancel("no cgroup v2 on this host") }
        var warnings: [String] = []
        guard let cgroup = Cgroup.create(name: "devprog", limits: CgroupLimits(), warnings: &warnings), let v2 = cgroup.path else {
            try Test.cancel("no cgroup v2 directory could be made: \(warnings)")
        }
        defer { cgroup.remove() }
        // null fully, zero for reading only.
        try CgroupDevices.attachProgram([DeviceRule(.character, 1, 3), DeviceRule(.character, 1, 5, [.read])], to: v2)
        #expect(CgroupDevices.programCount(on: v2) == 1)

        let nodes = Fixtures.temporaryDirectory("devprog")
        defer { try? FileManager.default.removeItem(at: nodes) }
        for (name, minor) in [("null", 3), ("zero", 5), ("kmsg", 11)] {
            #expect(mknod(nodes.path + "/" + name, S_IFCHR | 0o666, csys_makedev(1, UInt32(minor))) == 0)
        }
        // The shell enters the cgroup, then everything it starts is checked by the program.
        let script = """
            echo $$ > \(v2)/cgroup.procs || exit 99
            cd \(nodes.path)
            for f in null zero kmsg; do
                (exec 3< $f) 2>/dev/null && echo "$f read" || echo "$f no-read"
                (exec 3> $f) 2>/dev/null && echo "$f write" || echo "$f no-write"
            done
            mknod null2 c 1 3 2>/dev/null && echo "null mknod" || echo "null no-mknod"
            mknod kmsg2 c 1 11 2>/dev/null && echo "kmsg mknod" || echo "kmsg no-mknod"
            """
        let result = try Fixtures.run(["/bin/sh", "-c", script])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.split(separator: "\n") == ["null read", "null write", "zero read", "zero no-write",
                                                         "kmsg no-read", "kmsg no-write", "null mknod", "kmsg no-mknod"])
    }

    // MARK: delegation to a user namespace's root

    /// After `delegate`, the new owner (here uid/gid 65534, as a user namespace's root would be)
    /// can build a tree below the sandbox's cgroups and move its processes there, and cannot
    /// write a single limit file; release_agent is nowhere in reach.
    @Test(.timeLimit(.minutes(2)))
    func delegationHandsOverTheTreeButNotTheLimits() throws {
        try Fixtures.requireRoot()
        var warnings: [String] = []
        let limits = CgroupLimits(memoryMiB: 64, pids: 20, devices: DeviceRule.sandboxDefaults)
        guard let cgroup = Cgroup.create(name: "deleg", limits: limits, warnings: &warnings) else {
            try Test.cancel("no cgroup could be made on this host: \(warnings)")
        }
        defer { cgroup.remove() }
        try cgroup.delegate(toUID: 65534, gid: 65534)

        for directory in cgroup.directories {
            var st = stat()
            #expect(stat(directory, &st) == 0 && st.st_uid == 65534 && st.st_gid == 65534, "\(directory)")
            let delegated = Set(Self.isV2(directory) ? Cgroup.delegatedV2Files : Cgroup.delegatedV1Files)
            for file in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                #expect(stat(directory + "/" + file, &st) == 0)
                #expect(st.st_uid == (delegated.contains(file) ? 65534 : 0), "\(directory)/\(file) belongs to \(st.st_uid)")
            }
            // Only a hierarchy's root has release_agent; a sandbox's cgroup never is one.
            #expect(!FileManager.default.fileExists(atPath: directory + "/release_agent"))
        }

        // As the delegatee: the limit files refuse, a child cgroup can be made in every
        // hierarchy, and (cgroup v2 and v1 pids) the process moves itself into it. The shell is
        // put into the delegated cgroups by root first, as the sandbox's first process is.
        let limitFiles = ["pids.max", "memory.max", "memory.limit_in_bytes", "devices.allow", "devices.deny",
                          "cpu.max", "cpu.cfs_quota_us"]
        var entering = ""
        for directory in cgroup.directories { entering += "echo $$ > \(directory)/cgroup.procs || exit 98\n" }
        var asDelegatee = ""
        for directory in cgroup.directories {
            for file in limitFiles where FileManager.default.fileExists(atPath: directory + "/" + file) {
                asDelegatee += "(echo 1000 > \(directory)/\(file)) 2>/dev/null && echo 'wrote \(directory)/\(file)'\n"
            }
            asDelegatee += "mkdir \(directory)/child || echo 'no child in \(directory)'\n"
        }
        let moved = [cgroup.path, cgroup.v1Directory(controller: "pids")].compactMap { $0 }
        for directory in moved { asDelegatee += "echo $$ > \(directory)/child/cgroup.procs || echo 'cannot move into \(directory)/child'\n" }
        asDelegatee += "cat /proc/self/cgroup\n"
        for root in Self.v1Roots() where FileManager.default.fileExists(atPath: root + "/release_agent") {
            asDelegatee += "(echo /bin/sh > \(root)/release_agent) 2>/dev/null && echo 'wrote \(root)/release_agent'\n"
        }
        asDelegatee += "exit 0\n"
        let script = entering + "exec setpriv --reuid=65534 --regid=65534 --clear-groups /bin/sh -c \"$0\"\n"
        let result = try Fixtures.run(["/bin/sh", "-c", script, asDelegatee])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(!lines.contains { $0.hasPrefix("wrote") || $0.hasPrefix("no child") || $0.hasPrefix("cannot move") },
                "as the delegatee:\n\(result.stdout)\(result.stderr)")
        let leaf = URL(fileURLWithPath: cgroup.directories[0]).lastPathComponent
        #expect(lines.contains { $0.hasPrefix("0::") && $0.hasSuffix("/\(leaf)/child") } || cgroup.path == nil, "\(result.stdout)")
        #expect(lines.contains { $0.contains(":pids:") && $0.hasSuffix("/\(leaf)/child") } || cgroup.v1Directory(controller: "pids") == nil,
                "\(result.stdout)")
        #expect(cgroup.read("pids.max", controller: "pids") == "20")
        #expect(cgroup.read("memory.limit_in_bytes", controller: "memory") ?? cgroup.read("memory.max", controller: "memory") == String(64 << 20))
    }

    // MARK: helpers

    /// Checks that one of `file` in the sandbox's cgroups holds `value`, or, when none of them
    /// exists, that a warning starting with `warning` says why. Returns whether the value is set.
    @discardableResult
    func expectLimit(_ state: SandboxState, file: [String], equals value: String, warning: String,
                     sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        if let found = Self.value(of: file, in: state.cgroups ?? []) {
            #expect(found == value, "\(file): \(found)", sourceLocation: sourceLocation)
            return found == value
        }
        #expect(state.warnings.contains { $0.hasPrefix(warning) }, "\(file) is nowhere; warnings: \(state.warnings)",
                sourceLocation: sourceLocation)
        return false
    }

    /// The first of `files` that exists in one of `directories`, trimmed.
    static func value(of files: [String], in directories: [String]) -> String? {
        for directory in directories {
            for file in files {
                if let text = try? String(contentsOfFile: directory + "/" + file, encoding: .utf8) {
                    return text.trimmingCharacters(in: .whitespacesAndNewlines)
                }
            }
        }
        return nil
    }

    /// Whether a directory is in cgroup v2 (under where cgroup2 is mounted).
    static func isV2(_ directory: String) -> Bool {
        guard let mount = Cgroup.v2Mount() else { return false }
        return directory.hasPrefix(mount.hasSuffix("/") ? mount : mount + "/")
    }

    /// The mount points of the cgroup v1 hierarchies.
    static func v1Roots() -> [String] {
        let mountinfo = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        return mountinfo.split(separator: "\n").compactMap { line in
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2, halves[1].hasPrefix("cgroup "), case let fields = halves[0].split(separator: " "),
                  fields.count > 4 else { return nil }
            return String(fields[4])
        }
    }
}
