#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TestSupport
import TetherBoot
import Testing

/// The namespace backend's confinement, tried from inside a default sandbox the way a hostile
/// program would (SECURITY.md lists what each test checks). Sandboxes are booted with the CLI
/// (`tether boot`, then `tether exec --sandbox NAME`), each test under its own `$TETHER_HOME`.
/// Every expectation states what the attacker must not get and names the confinement item that
/// should have stopped it.
///
/// The probes never change a host setting when the confinement is missing: kernel knobs are
/// opened for writing and nothing is written, and anything the guest writes goes to a private
/// copy of the guest tree, never to the cached one other tests boot from.
@Suite(.serialized) struct ConfinementTests {
    let home = Fixtures.temporaryDirectory("conf")

    /// Docker's default capability set (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID,
    /// SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP).
    static let defaultCapabilities: UInt64 = 0x0000_0000_a804_25fb
    static let capDacReadSearch: UInt64 = 1 << 2
    static let capSysAdmin: UInt64 = 1 << 21
    /// The host ids Tether reserves for guests run by root: 4096 slots of 65,536 ids from 0x60000000.
    static let reservedHostIds: ClosedRange<UInt64> = 0x6000_0000...(0x6000_0000 + 4096 * 65_536 - 1)

    /// Runs `tether ARGS...` with this test's `$TETHER_HOME` and the static agent.
    func tether(_ arguments: [String], standardInput: String? = nil) throws -> Fixtures.Output {
        try Fixtures.tether(arguments, home: home, standardInput: standardInput)
    }

    var sandboxes: Sandboxes { Fixtures.sandboxes(home: home) }

    /// Stops whatever a test (or a failed expectation) left running.
    func cleanUp(_ names: [String]) {
        for name in names where sandboxes.entry(name).isLive { _ = try? sandboxes.stop(name, graceMs: 1_000) }
    }

    /// `tether boot --name NAME --rootfs ROOTFS OPTIONS...`; a boot that fails ends the test.
    @discardableResult
    func boot(_ name: String, rootfs: String? = nil, _ options: [String] = []) throws -> Fixtures.Output {
        let boot = try tether(["boot", "--name", name, "--rootfs", try rootfs ?? Fixtures.busyboxRootfs()] + options)
        try #require(boot.status == 0, "tether boot \(options.joined(separator: " ")) failed: \(boot.stderr)")
        return boot
    }

    /// `sh -c SCRIPT` in the sandbox as its root, through `tether exec`.
    func guest(_ sandbox: String, _ script: String, options: [String] = []) throws -> Fixtures.Output {
        try tether(["exec", "--sandbox", sandbox] + options + ["--", "sh", "-c", script])
    }

    /// Copies a static probe into the sandbox's /tmp through exec's stdin, as a user (or an
    /// attacker with exec) would, and returns its path in the guest.
    func install(_ probe: String, in sandbox: String) throws -> String {
        let target = "/tmp/" + probe
        let copy = try tether(["exec", "-i", "--sandbox", sandbox, "--", "sh", "-c", "cat > \(target) && chmod +x \(target)"],
                              standardInput: try Fixtures.staticProbe(probe))
        try #require(copy.status == 0, "copying \(probe) into the sandbox: \(copy.stderr)")
        return target
    }

    /// The first line of a uid_map or gid_map: (first id inside, first id outside, count).
    static func firstMapping(_ map: String) -> (inside: UInt64, outside: UInt64, count: UInt64)? {
        let fields = map.split(separator: "\n").first?.split(separator: " ", omittingEmptySubsequences: true) ?? []
        guard fields.count == 3, let inside = UInt64(fields[0]), let outside = UInt64(fields[1]),
              let count = UInt64(fields[2]) else { return nil }
        return (inside, outside, count)
    }

    /// `Name:\tvalue` lines of /proc/PID/status as a dictionary.
    static func statusFields(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return fields
    }

    /// Lines "KEY rest" of a probe script's output, keyed by their first two words.
    static func report(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ", maxSplits: 2).map(String.init)
            guard words.count >= 2 else { continue }
            result[words[0] + " " + words[1]] = words.count > 2 ? words[2] : ""
        }
        return result
    }

    /// A cgroup file of a sandbox as the host sees it: the first of `names` found in one of the
    /// sandbox's cgroup directories (v2 or a v1 hierarchy), with its path.
    func hostCgroupFile(_ name: String, _ names: [String]) -> (path: String, value: String)? {
        for directory in sandboxes.entry(name).state?.cgroups ?? [] {
            for file in names {
                let path = directory + "/" + file
                if let value = try? String(contentsOfFile: path, encoding: .utf8) {
                    return (path, value.trimmingCharacters(in: .whitespacesAndNewlines))
                }
            }
        }
        return nil
    }

    // MARK: user namespace

    @Test(.timeLimit(.minutes(5)))
    func guestRootIsAnUnprivilegedHostIdFromARangeNoOtherSandboxShares() throws {
        try Fixtures.requireRoot()
        defer { cleanUp(["ns-a", "ns-b"]) }
        try boot("ns-a")
        try boot("ns-b")
        var ranges: [ClosedRange<UInt64>] = []
        for name in ["ns-a", "ns-b"] {
            let maps = try guest(name, "id -u; cat /proc/self/uid_map; echo --; cat /proc/self/gid_map")
            try #require(maps.status == 0, "stderr: \(maps.stderr)")
            let parts = maps.stdout.components(separatedBy: "--\n")
            let lines = parts[0].split(separator: "\n", maxSplits: 1).map(String.init)
            #expect(lines.first == "0", "a guest command is not root inside its sandbox: \(maps.stdout)")
            let uidMap = try #require(Self.firstMapping(lines.count > 1 ? lines[1] : ""), "uid_map: \(maps.stdout)")
            let gidMap = try #require(Self.firstMapping(parts.count > 1 ? parts[1] : ""), "gid_map: \(maps.stdout)")
            #expect(uidMap.outside != 0 && gidMap.outside != 0,
                    "user namespace: guest root is host root (uid_map '\(uidMap)', gid_map '\(gidMap)')")
            #expect(uidMap.count <= 65_536 && gidMap.count <= 65_536,
                    "user namespace: the map covers more than one slot of 65,536 host ids (uid_map '\(uidMap)')")
            let range = uidMap.outside...(uidMap.outside + max(uidMap.count, 1) - 1)
            #expect(Self.reservedHostIds.contains(range.lowerBound) && Self.reservedHostIds.contains(range.upperBound),
                    "user namespace: host ids \(range) are outside the range Tether reserves (\(Self.reservedHostIds))")
            ranges.append(range)
            // From the host: the agent (the sandbox's PID 1) runs as that unprivileged host id.
            let pid = try #require(sandboxes.entry(name).state?.sandboxPid)
            let status = Self.statusFields(try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8))
            let hostUids = status["Uid"]?.split(whereSeparator: { $0 == "\t" || $0 == " " }).compactMap { UInt64($0) } ?? []
            #expect(!hostUids.isEmpty && !hostUids.contains(0),
                    "user namespace: the sandbox's PID 1 runs as host uid \(status["Uid"] ?? "?") on the host")
            // The image still looks owned by root inside (an idmapped mount), not by the overflow id.
            let owners = try guest(name, "stat -c '%u:%g' / /etc/passwd /sbin/tether-agent")
            #expect(owners.stdout == "0:0\n0:0\n0:0\n", "the image's files do not look owned by root inside: \(owners.stdout)\(owners.stderr)")
        }
        if ranges.count == 2 {
            #expect(!ranges[0].overlaps(ranges[1]),
                    "user namespace: two live sandboxes share host ids (\(ranges[0]) and \(ranges[1])): one's root owns the other's files")
        }
    }

    // MARK: capabilities, no_new_privs, seccomp

    @Test(.timeLimit(.minutes(5)))
    func guestCommandsHaveAtMostDockersCapabilitiesNoNewPrivsAndASeccompFilter() throws {
        try Fixtures.requireRoot()
        defer { cleanUp(["caps"]) }
        try boot("caps")
        for user in ["root", "sandbox"] {
            let result = try guest("caps", "cat /proc/self/status", options: ["-u", user])
            try #require(result.status == 0, "stderr: \(result.stderr)")
            let status = Self.statusFields(result.stdout)
            for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
                let value = try #require(status[set].flatMap { UInt64($0, radix: 16) }, "no \(set) in /proc/self/status")
                #expect(value & ~Self.defaultCapabilities == 0,
                        "capabilities: \(user)'s \(set) is \(String(value, radix: 16)), beyond the default set a80425fb (extra \(String(value & ~Self.defaultCapabilities, radix: 16)))")
                #expect(value & Self.capSysAdmin == 0, "capabilities: \(user) has CAP_SYS_ADMIN in \(set)")
                #expect(value & Self.capDacReadSearch == 0,
                        "capabilities: \(user) has CAP_DAC_READ_SEARCH in \(set) (what open_by_handle_at needs)")
            }
            if user == "sandbox" {
                #expect(status["CapEff"].flatMap { UInt64($0, radix: 16) } == 0, "capabilities: an unprivileged guest user has effective capabilities")
            }
            #expect(status["NoNewPrivs"] == "1", "no_new_privs: \(user)'s NoNewPrivs is \(status["NoNewPrivs"] ?? "absent"), a setuid program could gain privileges")
            #expect(status["Seccomp"] == "2", "seccomp: \(user)'s command runs without a filter (Seccomp: \(status["Seccomp"] ?? "absent"))")
        }
    }

    @Test(.timeLimit(.minutes(5)))
    func openByHandleAtCannotReachTheHostsDisk() throws {
        try Fixtures.requireRoot()
        defer { cleanUp(["shocker"]) }
        try boot("shocker")
        let probe = try install("handle-escape", in: "shocker")
        // "/" is the guest's root, on the host's disk; /proc/1/fd/1 and 2 are the agent's
        // console log, a host file. A handle opened on either reaches the whole host file system.
        let result = try guest("shocker", "\(probe) / /proc/1/fd/1 /proc/1/fd/2 /sbin/tether-agent")
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let attempts = result.stdout.split(separator: "\n").filter { $0.hasPrefix("open_by_handle_at ") }
        #expect(!attempts.isEmpty, "the probe made no attempt: \(result.stdout)\(result.stderr)")
        for attempt in attempts {
            if attempt.contains("OPENED") {
                Issue.record("open_by_handle_at (seccomp, no CAP_DAC_READ_SEARCH): the guest read the host's disk: \(attempt)")
            } else {
                #expect(attempt.hasSuffix("failed EPERM"), "open_by_handle_at is refused, but not with EPERM: \(attempt)")
            }
        }
    }

    @Test(.timeLimit(.minutes(5)))
    func seccompNoneAndRestrictedAreExplicitChoicesAndNoneWarns() throws {
        try Fixtures.requireRoot()
        let rootfs = try Fixtures.busyboxRootfs()
        let none = try tether(["run", "--rootfs", rootfs, "--seccomp", "none", "--", "grep", "Seccomp:", "/proc/self/status"])
        #expect(none.status == 0, "tether run --seccomp none: \(none.stderr)")
        #expect(none.stdout == "Seccomp:\t0\n", "seccomp none: a filter is still installed: \(none.stdout)")
        #expect(none.stderr.contains("warning:") && none.stderr.lowercased().contains("seccomp"),
                "seccomp none: turning the filter off printed no warning: \(none.stderr)")
        let restricted = try tether(["run", "--rootfs", rootfs, "--seccomp", "restricted", "--", "grep", "Seccomp:", "/proc/self/status"])
        #expect(restricted.status == 0, "tether run --seccomp restricted: \(restricted.stderr)")
        #expect(restricted.stdout == "Seccomp:\t2\n", "seccomp restricted: no filter: \(restricted.stdout)")
        let bad = try tether(["run", "--rootfs", rootfs, "--seccomp", "off", "--", "true"])
        #expect(bad.status == 2, "--seccomp off is not a usage error: \(bad.stderr)")

        // exec chooses per command too.
        defer { cleanUp(["filters"]) }
        try boot("filters")
        let execNone = try tether(["exec", "--sandbox", "filters", "--seccomp", "none", "--", "grep", "Seccomp:", "/proc/self/status"])
        #expect(execNone.stdout == "Seccomp:\t0\n", "tether exec --seccomp none: \(execNone.stdout)\(execNone.stderr)")
        let execDefault = try tether(["exec", "--sandbox", "filters", "--", "grep", "Seccomp:", "/proc/self/status"])
        #expect(execDefault.stdout == "Seccomp:\t2\n", "seccomp: exec without --seccomp has no filter: \(execDefault.stdout)\(execDefault.stderr)")
    }

    // MARK: /proc, /sys, /dev

    @Test(.timeLimit(.minutes(5)))
    func kernelKnobsAreNotWritableAndKernelMemoryIsMasked() throws {
        try Fixtures.requireRoot()
        defer { cleanUp(["knobs"]) }
        try boot("knobs")
        // `: >> FILE` opens FILE for writing and writes nothing: where the confinement is
        // missing, the probe learns the knob is writable without changing the host.
        let writable = ["/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sysrq-trigger",
                        "/sys/power/state", "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/kernel/uevent_helper"]
        let masked = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats"]
        let script = """
            for f in \(writable.joined(separator: " ")); do
              if [ ! -e "$f" ]; then echo "open $f absent"
              elif (: >> "$f") 2>/dev/null; then echo "open $f writable"
              else echo "open $f refused"; fi
            done
            for f in \(masked.joined(separator: " ")); do
              if [ -e "$f" ]; then echo "read $f $(head -c 4096 "$f" 2>/dev/null | wc -c)"; else echo "read $f absent"; fi
            done
            echo "list /sys/firmware $(ls -A /sys/firmware 2>/dev/null | wc -l)"
            """
        let result = try guest("knobs", script)
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let report = Self.report(result.stdout)
        for file in writable {
            let outcome = report["open " + file]
            #expect(outcome == "refused" || outcome == "absent",
                    "read-only /proc/sys, /proc/sysrq-trigger and /sys: the guest can open \(file) for writing (\(outcome ?? "no answer"))")
        }
        for file in masked {
            let outcome = report["read " + file]
            #expect(outcome == "0" || outcome == "absent", "masked paths: the guest read \(outcome ?? "?") bytes of \(file)")
        }
        #expect(report["list /sys/firmware"] == "0", "masked paths: /sys/firmware lists \(report["list /sys/firmware"] ?? "?") entries")
    }

    @Test(.timeLimit(.minutes(5)))
    func newDeviceNodesCannotBeMadeOrOpened() throws {
        try Fixtures.requireRoot()
        // A hostile image can carry device nodes of its own: plant /dev/kmsg's (char 1:11) in a
        // private copy of the tree. (makedev(3) for majors and minors below 256: major << 8 | minor.)
        let rootfs = try Fixtures.rootfsCopy("devices")
        #expect(mknod(rootfs + "/planted-kmsg", S_IFCHR | 0o666, dev_t(1 << 8 | 11)) == 0, "mknod on the host: \(errno)")
        defer { cleanUp(["devices"]) }
        try boot("devices", rootfs: rootfs)
        let script = """
            if mknod /tmp/kmsg c 1 11 2>/dev/null; then echo "mknod /tmp/kmsg made"; else echo "mknod /tmp/kmsg refused"; fi
            for f in /tmp/kmsg /planted-kmsg /dev/kmsg; do
              if [ -e "$f" ]; then echo "read $f $(head -c 256 "$f" 2>/dev/null | wc -c)"; else echo "read $f absent"; fi
            done
            for f in $(find /dev -type c -o -type b); do echo "node $f $(stat -c '%t:%T' "$f")"; done
            """
        let result = try guest("devices", script)
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let report = Self.report(result.stdout)
        #expect(report["mknod /tmp/kmsg"] == "refused", "devices: mknod of char 1:11 (/dev/kmsg) worked in the guest")
        for file in ["/tmp/kmsg", "/planted-kmsg", "/dev/kmsg"] {
            let outcome = report["read " + file]
            #expect(outcome == "0" || outcome == "absent",
                    "devices (nodev, device cgroup): the guest read \(outcome ?? "?") bytes of the host's kernel log through \(file)")
        }
        // /dev holds the allow-list only: null, zero, full, random, urandom, tty, ptmx and the
        // pts instance's nodes (major:minor in hex, as stat prints them).
        let allowed: Set<String> = ["1:3", "1:5", "1:7", "1:8", "1:9", "5:0", "5:2"]
        for (key, numbers) in report where key.hasPrefix("node ") {
            let path = String(key.dropFirst(5))
            #expect(allowed.contains(numbers) || numbers.hasPrefix("88:") || path.hasPrefix("/dev/pts/"),
                    "/dev: \(path) (\(numbers), hex) is not in the allow-list")
        }
        // From the host: the sandbox's device cgroup does not allow every device.
        if let devices = hostCgroupFile("devices", ["devices.list"]) {
            #expect(!devices.value.contains("a *:* rwm"), "device cgroup: \(devices.path) allows every device")
        }
    }

    // MARK: network

    @Test(.timeLimit(.minutes(5)))
    func aHostLoopbackListenerIsUnreachableByDefault() throws {
        try Fixtures.requireRoot()
        // A host-only service the guest must not reach.
        let listener = try EgressSupport.Listener("127.0.0.1")
        defer { cleanUp(["net"]) }
        try boot("net")
        let probe = try install("tcp-connect", in: "net")
        let result = try guest("net", """
            echo "loopback $(\(probe) 127.0.0.1 \(listener.port))"
            echo "metadata $(\(probe) 169.254.169.254 80 2)"
            echo "interfaces $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' ')"
            """)
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let report = Self.report(result.stdout)
        #expect(report["loopback failed"] != nil, "network none: the guest reached the host's 127.0.0.1:\(listener.port): \(result.stdout)")
        #expect(report["metadata connected"] == nil, "network none: the guest reached 169.254.169.254: \(result.stdout)")
        #expect(report["interfaces lo"] == "", "network none: the guest sees interfaces besides lo: \(result.stdout)")
        #expect(!listener.acceptedAConnection(), "network none: the host's loopback listener accepted a connection from the guest")
    }

    @Test(.timeLimit(.minutes(5)))
    func networkHostIsAnOptInThatWarns() throws {
        try Fixtures.requireRoot()
        // A host-only service the guest must not reach.
        let listener = try EgressSupport.Listener("127.0.0.1")
        defer { cleanUp(["hostnet"]) }
        let boot = try boot("hostnet", ["--network", "host"])
        #expect(boot.stderr.contains("warning:") && boot.stderr.lowercased().contains("network"),
                "network host: the opt-in printed no warning: \(boot.stderr)")
        let probe = try install("tcp-connect", in: "hostnet")
        let result = try guest("hostnet", "\(probe) 127.0.0.1 \(listener.port)")
        #expect(result.stdout == "connected\n", "network host no longer reaches the host's loopback: \(result.stdout)\(result.stderr)")
        #expect(listener.acceptedAConnection(), "network host: the host's listener saw no connection")
    }

    // MARK: image and layers

    @Test(.timeLimit(.minutes(5)))
    func writesStayInTheSandboxesOwnLayer() throws {
        try Fixtures.requireRoot()
        // A private copy: should the image be writable, the damage stays in this test.
        let rootfs = try Fixtures.rootfsCopy("image")
        let agentBefore = try Data(contentsOf: URL(fileURLWithPath: rootfs + "/sbin/tether-agent"))
        defer { cleanUp(["writer", "reader", "keeper", "scratch"]) }
        try boot("writer", rootfs: rootfs)
        // The agent is running, so it is replaced the way an attacker would: unlink, then a new file.
        let write = try guest("writer", """
            echo escaped > /escape-check && rm -f /sbin/tether-agent && echo evil > /sbin/tether-agent && cat /escape-check
            """)
        #expect(write.status == 0 && write.stdout == "escaped\n", "the guest cannot write its own root: \(write.stdout)\(write.stderr)")

        #expect(!FileManager.default.fileExists(atPath: rootfs + "/escape-check"),
                "read-only image: a file the guest wrote to / is in the image on the host")
        let agentAfter = try? Data(contentsOf: URL(fileURLWithPath: rootfs + "/sbin/tether-agent"))
        #expect(agentAfter == agentBefore, "read-only image: the guest replaced the image's /sbin/tether-agent (every later sandbox's PID 1)")

        try boot("reader", rootfs: rootfs)
        let read = try guest("reader", "test -e /escape-check && echo present || echo absent; head -c 4 /sbin/tether-agent | tail -c 3; echo")
        #expect(read.stdout == "absent\nELF\n", "read-only image: another sandbox of the same image sees the first one's writes: \(read.stdout)\(read.stderr)")

        #expect(try tether(["stop", "writer", "--grace", "2s"]).status == 0)
        #expect(try tether(["rm", "writer"]).status == 0)

        // A layer is its sandbox's own and stays with its name: stopped and booted again, the
        // sandbox still has its file; after `tether rm` the name starts from the image again.
        // (Not the writer: its layer holds its own replaced agent, which its next boot would run.)
        try boot("keeper", rootfs: rootfs)
        #expect(try guest("keeper", "echo kept > /escape-check").status == 0)
        #expect(try tether(["stop", "keeper", "--grace", "2s"]).status == 0)
        try boot("keeper", rootfs: rootfs)
        let kept = try guest("keeper", "cat /escape-check")
        #expect(kept.stdout == "kept\n", "per-sandbox layer: the file did not survive stop and boot of the name: \(kept.stdout)\(kept.stderr)")
        #expect(try tether(["stop", "keeper", "--grace", "2s"]).status == 0)
        let remove = try tether(["rm", "keeper"])
        #expect(remove.status == 0, "tether rm: \(remove.stderr)")
        try boot("keeper", rootfs: rootfs)
        let fresh = try guest("keeper", "test -e /escape-check && echo present || echo absent")
        #expect(fresh.stdout == "absent\n", "tether rm kept the sandbox's layer: \(fresh.stdout)\(fresh.stderr)")

        // --ephemeral: the layer is gone at stop; nothing of it is left on the host's disk.
        try boot("scratch", rootfs: rootfs, ["--ephemeral"])
        #expect(try guest("scratch", "echo scratch > /escape-check").status == 0)
        #expect(try tether(["stop", "scratch", "--grace", "2s"]).status == 0)
        #expect(!Self.find("escape-check", under: home.path), "--ephemeral: the layer outlived the sandbox")
        try boot("scratch", rootfs: rootfs, ["--ephemeral"])
        let again = try guest("scratch", "test -e /escape-check && echo present || echo absent")
        #expect(again.stdout == "absent\n", "--ephemeral: a new boot of the name sees the last one's writes")
        #expect(!FileManager.default.fileExists(atPath: rootfs + "/escape-check"))
    }

    @Test(.timeLimit(.minutes(5)))
    func theWritableLayerIsBoundedByDisk() throws {
        try Fixtures.requireRoot()
        let rootfs = try Fixtures.rootfsCopy("disk")
        defer { cleanUp(["layer", "tmplayer"]) }
        for (name, options) in [("layer", ["--disk", "16"]), ("tmplayer", ["--disk", "16", "--ephemeral"])] {
            try boot(name, rootfs: rootfs, options)
            let fill = try guest(name, "dd if=/dev/zero of=/fill bs=1M count=64 2>&1; echo \"status $?\"; echo \"size $(($(wc -c < /fill) / 1048576))\"; rm -f /fill")
            let report = Self.report(fill.stdout)
            #expect(report["status 0"] == nil, "--disk 16 (\(options.joined(separator: " "))): 64 MiB fit in the layer: \(fill.stdout)")
            #expect(fill.stdout.contains("No space left"), "--disk 16: the write did not end with ENOSPC: \(fill.stdout)")
            let size = report.keys.first { $0.hasPrefix("size ") }.flatMap { Int($0.dropFirst(5)) }
            #expect((size ?? 64) <= 16, "--disk 16: the guest wrote \(size.map(String.init) ?? "?") MiB")
            #expect(!FileManager.default.fileExists(atPath: rootfs + "/fill"), "read-only image: the filler landed in the image")
        }
    }

    // MARK: cgroup limits

    @Test(.timeLimit(.minutes(5)))
    func pidsAndMemoryLimitsAreSetAndCannotBeRaisedFromInside() throws {
        try Fixtures.requireRoot()
        defer { cleanUp(["limits"]) }
        try boot("limits")
        let pids = hostCgroupFile("limits", ["pids.max"])
        let memory = hostCgroupFile("limits", ["memory.max", "memory.limit_in_bytes"])
        #expect(pids != nil && pids?.value != "max", "pids limit: none by default (\(pids.map { "\($0.path) = \($0.value)" } ?? "no pids.max"))")
        let unlimitedMemory = memory.map { $0.value == "max" || (UInt64($0.value) ?? 0) >= 1 << 62 } ?? true
        #expect(!unlimitedMemory, "memory limit: none by default (\(memory.map { "\($0.path) = \($0.value)" } ?? "no memory.max"))")

        // Inside: the limit is visible, and every way of raising it fails.
        let script = """
            for f in $(find /sys/fs/cgroup -maxdepth 2 -name pids.max 2>/dev/null); do echo "inside $f $(cat "$f")"; done
            raise() { if (echo "$2" > "$1") 2>/dev/null; then echo "raised $1"; else echo "refused $1"; fi; }
            for f in $(find /sys/fs/cgroup -maxdepth 2 \\( -name pids.max -o -name memory.max \\) 2>/dev/null); do raise "$f" max; done
            for f in $(find /sys/fs/cgroup -maxdepth 2 -name memory.limit_in_bytes 2>/dev/null); do raise "$f" -1; done
            mkdir -p /tmp/v1memory /tmp/v1pids /tmp/v2
            if mount -t cgroup -o memory cgroup /tmp/v1memory 2>/dev/null; then echo "mounted v1-memory"; raise /tmp/v1memory/memory.limit_in_bytes -1; fi
            if mount -t cgroup -o pids cgroup /tmp/v1pids 2>/dev/null; then echo "mounted v1-pids"; raise /tmp/v1pids/pids.max max; fi
            if mount -t cgroup2 cgroup2 /tmp/v2 2>/dev/null; then
              for f in /tmp/v2/pids.max /tmp/v2/memory.max; do [ -e "$f" ] && raise "$f" max; done
            fi
            true
            """
        let result = try guest("limits", script)
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        let inside = lines.filter { $0.hasPrefix("inside ") }
        #expect(!inside.isEmpty, "cgroups read-only inside: the guest sees no pids.max under /sys/fs/cgroup: \(result.stdout)")
        for line in inside { #expect(!line.hasSuffix(" max"), "pids limit: the guest's \(line)") }
        for line in lines where line.hasPrefix("raised ") {
            Issue.record("cgroup limits: the guest raised its own limit (\(line))")
        }
        #expect(!lines.contains("mounted v1-memory"), "cgroup limits: the guest mounted a cgroup v1 memory hierarchy")
        // Whatever the guest did, the host's files still hold the limits they held.
        let pidsAfter = hostCgroupFile("limits", ["pids.max"])
        let memoryAfter = hostCgroupFile("limits", ["memory.max", "memory.limit_in_bytes"])
        #expect(pidsAfter?.value == pids?.value, "pids limit changed from inside: \(pids?.value ?? "?") -> \(pidsAfter?.value ?? "?")")
        #expect(memoryAfter?.value == memory?.value, "memory limit changed from inside: \(memory?.value ?? "?") -> \(memoryAfter?.value ?? "?")")
    }

    // MARK: rootless

    @Test(.timeLimit(.minutes(5)))
    func rootlessRunAsNobodyIsRootInside() throws {
        try Fixtures.requireRoot()   // to become nobody with setpriv and to chown the tree
        if let limit = try? String(contentsOfFile: "/proc/sys/user/max_user_namespaces", encoding: .utf8),
           limit.trimmingCharacters(in: .whitespacesAndNewlines) == "0" {
            try Test.cancel("this host allows no user namespaces (/proc/sys/user/max_user_namespaces is 0)")
        }
        if let allowed = try? String(contentsOfFile: "/proc/sys/kernel/unprivileged_userns_clone", encoding: .utf8),
           allowed.trimmingCharacters(in: .whitespacesAndNewlines) == "0" {
            try Test.cancel("this host forbids unprivileged user namespaces (kernel.unprivileged_userns_clone is 0)")
        }
        let nobody: uid_t = 65_534
        let rootfs = try Fixtures.rootfsCopy("rootless", owner: nobody)
        let top = URL(fileURLWithPath: rootfs).deletingLastPathComponent()
        let tetherHome = top.appendingPathComponent("home").path
        let cache = top.appendingPathComponent("cache").path
        for directory in [tetherHome, cache] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false,
                                                    attributes: [.posixPermissions: 0o700])
            #expect(chown(directory, nobody, nobody) == 0)
        }
        #expect(chown(top.path, nobody, nobody) == 0 && chmod(top.path, 0o700) == 0)
        let environment = ["PATH": "/usr/bin:/bin", "HOME": top.path, "TETHER_HOME": tetherHome, "TETHER_CACHE": cache]
        let result = try Fixtures.run(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                                       Binaries.product("tether").path, "run", "--rootfs", rootfs, "--",
                                       "sh", "-c", "id -u; cat /proc/self/uid_map; echo escaped > /escape-check"],
                                      environment: environment)
        #expect(result.status == 0, "rootless: tether run as nobody failed: \(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == "0", "rootless: the guest is not root inside: \(result.stdout)\(result.stderr)")
        let map = Self.firstMapping(lines.dropFirst().first ?? "")
        #expect(map?.inside == 0 && map?.outside == UInt64(nobody), "rootless: guest root is not the invoking user: \(result.stdout)")
        #expect(!FileManager.default.fileExists(atPath: rootfs + "/escape-check"), "rootless: the guest wrote into the image")
    }

    /// Whether a file called `name` exists anywhere under `directory` (layers keep their own layout).
    static func find(_ name: String, under directory: String) -> Bool {
        guard let walker = FileManager.default.enumerator(atPath: directory) else { return false }
        for case let path as String in walker where (path as NSString).lastPathComponent == name { return true }
        return false
    }
}
