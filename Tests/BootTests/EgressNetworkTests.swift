#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TestSupport
import TetherBoot
import TetherPosix
import Testing

/// `--network egress`: real sandboxes booted with the CLI, a static probe connecting from inside
/// (Probes/tcp-connect.c), listeners on the host. What the guest must reach (the host's own
/// address, DNS through pasta, what `--allow-net` names) and what it must not (the host's
/// loopback, 169.254.169.254, private ranges), also after its root tried to undo the rules.
@Suite(.serialized) struct EgressNetworkTests {
    let home = Fixtures.temporaryDirectory("egress")

    func tether(_ arguments: [String], standardInput: String? = nil) throws -> Fixtures.Output {
        try Fixtures.tether(arguments, home: home, standardInput: standardInput)
    }

    var sandboxes: Sandboxes { Fixtures.sandboxes(home: home) }

    func cleanUp(_ name: String) {
        if sandboxes.entry(name).isLive { _ = try? sandboxes.stop(name, graceMs: 1_000) }
    }

    /// Skips unless this host has what egress needs (root is checked by the caller).
    static func requireEgressPrograms() throws {
        for program in ["/usr/bin/pasta", "/usr/sbin/nft"] where !FileManager.default.isExecutableFile(atPath: program) {
            try Test.cancel("\(program) is missing: scripts/deps.sh installs passt and nftables")
        }
    }

    func boot(_ name: String, rootfs: String? = nil, _ options: [String]) throws {
        let boot = try tether(["boot", "--name", name, "--rootfs", try rootfs ?? Fixtures.busyboxRootfs(), "--network", "egress"] + options)
        try #require(boot.status == 0, "tether boot --network egress \(options.joined(separator: " ")) failed: \(boot.stderr)")
    }

    func guest(_ name: String, _ script: String) throws -> Fixtures.Output {
        try tether(["exec", "--sandbox", name, "--", "sh", "-c", script])
    }

    func installProbe(in name: String) throws -> String {
        let copy = try tether(["exec", "-i", "--sandbox", name, "--", "sh", "-c", "cat > /tmp/tcp-connect && chmod +x /tmp/tcp-connect"],
                              standardInput: try Fixtures.staticProbe("tcp-connect"))
        try #require(copy.status == 0, "copying the probe into the sandbox: \(copy.stderr)")
        return "/tmp/tcp-connect"
    }

    /// "LABEL RESULT" lines of a probe script, by label.
    static func results(_ text: String) -> [String: String] {
        var results: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ", maxSplits: 1).map(String.init)
            if words.count == 2 { results[words[0]] = words[1] }
        }
        return results
    }

    /// The host address the guest should reach: the host's own, opened with --allow-net ADDR/32
    /// when it lies in a range egress refuses (a cloud VM's 10.x address).
    static func reachableHostAddress(excluding dummy: String?) throws -> (address: String, options: [String]) {
        guard let address = try EgressSupport.hostAddress(excluding: dummy) else {
            try Test.cancel("the host has no global IPv4 address for the guest to reach")
        }
        let refused = EgressRules.blockedIPv4.contains { (try? NetworkRange(parsing: $0))?.contains(address) == true }
        return (address, refused ? ["--allow-net", address + "/32"] : [])
    }

    @Test(.timeLimit(.minutes(5)))
    func guestReachesTheHostsAddressAndDNSButNotItsLoopbackMetadataOrPrivateRanges() throws {
        try Fixtures.requireRoot()
        try Self.requireEgressPrograms()
        let dummy = EgressSupport.PrivateAddresses.make()
        defer { dummy?.remove() }
        let (hostAddress, hostOptions) = try Self.reachableHostAddress(excluding: dummy?.ownInterface == true ? dummy?.interface : nil)
        let host = try EgressSupport.Listener(hostAddress)
        let loopback = try EgressSupport.Listener("127.0.0.1")
        let allowed = try dummy.map { try EgressSupport.Listener($0.addresses[0]) }
        let refused = try dummy.map { try EgressSupport.Listener($0.addresses[1]) }
        defer { cleanUp("egress") }
        try boot("egress", hostOptions + (dummy.map { ["--allow-net", $0.addresses[0] + "/32"] } ?? []))

        let probe = try installProbe(in: "egress")
        var script = """
            echo "host $(\(probe) \(hostAddress) \(host.port))"
            echo "loopback $(\(probe) 127.0.0.1 \(loopback.port))"
            echo "gateway $(\(probe) \(EgressNetwork.gateway) \(loopback.port))"
            echo "metadata $(\(probe) 169.254.169.254 80 2)"
            echo "private $(\(probe) 192.168.1.1 80 2)"
            """
        if let allowed, let refused {
            script += "\necho \"allowed $(\(probe) \(allowed.address) \(allowed.port))\""
            script += "\necho \"refused $(\(probe) \(refused.address) \(refused.port))\""
        }
        let result = try guest("egress", script)
        #expect(result.status == 0, "\(result.stderr)")
        let report = Self.results(result.stdout)
        #expect(report["host"] == "connected", "egress: the guest did not reach the host's \(hostAddress): \(result.stdout)")
        #expect(host.acceptedAConnection(), "egress: the host's listener on \(hostAddress) saw no connection")
        // The guest's own loopback refuses; the gateway does not lead to the host's.
        #expect(report["loopback"]?.hasPrefix("failed") == true, "\(result.stdout)")
        #expect(report["gateway"] == "failed EHOSTUNREACH", "egress: the gateway address reached the host's loopback: \(result.stdout)")
        #expect(!loopback.acceptedAConnection(), "egress: the host's 127.0.0.1 listener accepted a connection from the guest")
        #expect(report["metadata"] == "failed EHOSTUNREACH", "egress: 169.254.169.254 was not refused: \(result.stdout)")
        #expect(report["private"] == "failed EHOSTUNREACH", "egress: 192.168.1.1 was not refused: \(result.stdout)")
        if let allowed, let refused {
            // --allow-net opens exactly what it names: .1/32, not its neighbour .2.
            #expect(report["allowed"] == "connected", "--allow-net \(allowed.address)/32 did not open it: \(result.stdout)")
            #expect(allowed.acceptedAConnection())
            #expect(report["refused"] == "failed EHOSTUNREACH", "--allow-net opened more than it named: \(result.stdout)")
            #expect(!refused.acceptedAConnection())
        } else {
            print("EgressNetworkTests: no private test addresses could be added on the host: --allow-net is checked with the host's address only")
        }

        if let (name, address) = EgressSupport.resolvableName() {
            let lookup = try guest("egress", "cat /etc/resolv.conf; nslookup \(name)")
            #expect(lookup.stdout.contains("nameserver \(EgressNetwork.nameserver)"), "\(lookup.stdout)")
            #expect(lookup.stdout.contains(address), "egress: \(name) did not resolve to \(address) through pasta's DNS: \(lookup.stdout)\(lookup.stderr)")
        } else {
            print("EgressNetworkTests: the host's resolver answers none of the names tried (no upstream DNS here): the DNS check is skipped")
        }

        let state = try #require(sandboxes.entry("egress").state)
        #expect(state.network == .egress)
        #expect((state.allowNet ?? []) == hostOptions.filter { $0 != "--allow-net" } + (dummy.map { [$0.addresses[0] + "/32"] } ?? []))
        #expect(state.egress?.component == "pasta" && Fixtures.isRunning(state.egress?.pid))
    }

    @Test(.timeLimit(.minutes(5)))
    func allowingLoopbackOpensTheHostsLoopbackAtTheGatewayWithAWarning() throws {
        try Fixtures.requireRoot()
        try Self.requireEgressPrograms()
        let loopback = try EgressSupport.Listener("127.0.0.1")
        defer { cleanUp("lo-open") }
        let boot = try tether(["boot", "--name", "lo-open", "--rootfs", try Fixtures.busyboxRootfs(), "--network", "egress",
                               "--allow-net", "127.0.0.1/32"])
        try #require(boot.status == 0, "\(boot.stderr)")
        #expect(boot.stderr.contains("warning:") && boot.stderr.contains(EgressNetwork.gateway), "\(boot.stderr)")
        let probe = try installProbe(in: "lo-open")
        let result = try guest("lo-open", "echo \"gateway $(\(probe) \(EgressNetwork.gateway) \(loopback.port))\"; echo \"metadata $(\(probe) 169.254.169.254 80 2)\"")
        let report = Self.results(result.stdout)
        #expect(report["gateway"] == "connected", "--allow-net 127.0.0.1/32 did not open the host's loopback: \(result.stdout)")
        #expect(loopback.acceptedAConnection())
        #expect(report["metadata"] == "failed EHOSTUNREACH", "opening the loopback opened more: \(result.stdout)")
    }

    @Test(.timeLimit(.minutes(5)))
    func guestRootCannotUndoTheBlock() throws {
        try Fixtures.requireRoot()
        try Self.requireEgressPrograms()
        let rootfs = try Fixtures.rootfsCopy("egress-nft")
        let hasNft = try EgressSupport.installNft(into: rootfs)
        let (hostAddress, hostOptions) = try Self.reachableHostAddress(excluding: nil)
        let host = try EgressSupport.Listener(hostAddress)
        defer { cleanUp("undo") }
        try boot("undo", rootfs: rootfs, hostOptions)
        let probe = try installProbe(in: "undo")
        let attempts = try guest("undo", """
            \(hasNft ? "/usr/sbin/nft flush ruleset; echo \"nft $?\"" : "echo 'nft 1'")
            ip route add 169.254.169.254/32 via \(EgressNetwork.gateway) dev eth0 2>/dev/null; echo "route $?"
            ip route del default 2>/dev/null; echo "default $?"
            ip addr add 169.254.1.2/16 dev eth0 2>/dev/null; echo "address $?"
            ip link set eth0 down 2>/dev/null; echo "link $?"
            echo 1 > /proc/sys/net/ipv4/ip_forward 2>/dev/null; echo "sysctl $?"
            echo "metadata $(\(probe) 169.254.169.254 80 2)"
            echo "host $(\(probe) \(hostAddress) \(host.port))"
            """)
        let report = Self.results(attempts.stdout)
        for step in ["nft", "route", "default", "address", "link", "sysctl"] {
            #expect(report[step] != "0", "guest root could \(step): \(attempts.stdout)\(attempts.stderr)")
        }
        if hasNft { #expect(attempts.stderr.contains("Operation not permitted"), "\(attempts.stderr)") }
        #expect(report["metadata"] == "failed EHOSTUNREACH", "the block did not hold: \(attempts.stdout)")
        #expect(report["host"] == "connected", "egress itself broke: \(attempts.stdout)")
        // From the host: the rules are all still there.
        let pid = try #require(sandboxes.entry("undo").state?.sandboxPid)
        let rules = try Fixtures.run(["/usr/bin/nsenter", "--net=/proc/\(pid)/ns/net", "/usr/sbin/nft", "list", "table", "inet", EgressRules.table])
        #expect(rules.status == 0 && rules.stdout.contains("169.254.0.0/16") && rules.stdout.contains("reject"), "\(rules.stdout)\(rules.stderr)")
    }

    @Test(.timeLimit(.minutes(5)))
    func pastaEndsWithTheSandboxAndItsCrashIsAWarningNotAHang() throws {
        try Fixtures.requireRoot()
        try Self.requireEgressPrograms()
        defer { cleanUp("crash"); cleanUp("ends") }
        try boot("ends", [])
        let first = try #require(sandboxes.entry("ends").state?.egress?.pid)
        let handle = try ProcessHandle(pid: first)
        #expect(try tether(["stop", "ends", "--grace", "2s"]).status == 0)
        let pastaEnded = handle.waitForExit(timeoutMs: 10_000)
        #expect(pastaEnded, "pasta \(first) outlived its sandbox")
        #expect(sandboxes.entry("ends").state?.egress?.pid == nil)

        try boot("crash", [])
        let pasta = try #require(sandboxes.entry("crash").state?.egress?.pid)
        #expect(kill(pasta, SIGKILL) == 0)
        // The supervisor notices through pasta's pidfd and records it; wait for that, not a time.
        var ended: String?
        for _ in 0..<500 where ended == nil {
            ended = sandboxes.entry("crash").state?.egress?.ended
            if ended == nil { usleep(20_000) }
        }
        #expect(ended == "was killed by signal 9", "state.json did not record pasta's end")
        let state = try #require(sandboxes.entry("crash").state)
        #expect(state.status == .running)
        #expect(state.warnings.contains { $0.contains("pasta") && $0.contains("no outbound network") }, "\(state.warnings)")
        // The sandbox still answers; outbound connections now fail instead of hanging.
        let after = try guest("crash", "echo alive")
        #expect(after.stdout == "alive\n", "\(after.stderr)")
        #expect(try tether(["stop", "crash", "--grace", "2s"]).status == 0)
    }

    @Test(.timeLimit(.minutes(5)))
    func pastaEndsWhenItsSupervisorIsKilled() throws {
        try Fixtures.requireRoot()
        try Self.requireEgressPrograms()
        defer { cleanUp("orphan") }
        try boot("orphan", [])
        let state = try #require(sandboxes.entry("orphan").state)
        let pasta = try ProcessHandle(pid: try #require(state.egress?.pid))
        let sandbox = try ProcessHandle(pid: try #require(state.sandboxPid))
        // pasta changes its credentials, which clears a parent-death signal: its keeper is what
        // ends it when the supervisor goes without a word.
        #expect(kill(state.supervisorPid, SIGKILL) == 0)
        let pastaEnded = pasta.waitForExit(timeoutMs: 10_000)
        #expect(pastaEnded, "pasta outlived its killed supervisor")
        let sandboxEnded = sandbox.waitForExit(timeoutMs: 10_000)
        #expect(sandboxEnded, "the sandbox outlived its killed supervisor")
        // What a killed supervisor leaves: its sandbox's (now empty) cgroups.
        for directory in state.cgroups ?? [] { rmdir(directory) }
    }

    @Test(.timeLimit(.minutes(5)))
    func rootlessEgressAsNobody() throws {
        try Fixtures.requireRoot()   // to become nobody, and to give it a /dev/net/tun of its own
        try Self.requireEgressPrograms()
        for (file, forbidden) in [("/proc/sys/user/max_user_namespaces", "0"), ("/proc/sys/kernel/unprivileged_userns_clone", "0")] {
            if let value = try? String(contentsOfFile: file, encoding: .utf8), value.trimmingCharacters(in: .whitespacesAndNewlines) == forbidden {
                try Test.cancel("this host forbids unprivileged user namespaces (\(file) is \(forbidden))")
            }
        }
        let nobody: uid_t = 65_534
        let rootfs = try Fixtures.rootfsCopy("egress-rootless", owner: nobody)
        let probe = rootfs + "/sbin/tcp-connect"
        #expect(copyfile(try Fixtures.staticProbe("tcp-connect"), probe) && chown(probe, nobody, nobody) == 0)
        let top = URL(fileURLWithPath: rootfs).deletingLastPathComponent()
        let tetherHome = top.appendingPathComponent("home").path
        try FileManager.default.createDirectory(atPath: tetherHome, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        #expect(chown(tetherHome, nobody, nobody) == 0 && chown(top.path, nobody, nobody) == 0 && chmod(top.path, 0o700) == 0)
        let (hostAddress, hostOptions) = try Self.reachableHostAddress(excluding: nil)
        let host = try EgressSupport.Listener(hostAddress)
        // pasta opens /dev/net/tun as the user. Where the host keeps it 0600 (this one does),
        // the test gives nobody a 0666 node of the same device in a private mount namespace,
        // leaving the host's as it is.
        var tunMode = stat()
        let tunOpen = stat("/dev/net/tun", &tunMode) == 0 && tunMode.st_mode & 0o006 == 0o006
        let devices = top.appendingPathComponent("dev").path
        let guestScript = """
            id -u
            echo "host $(tcp-connect \(hostAddress) \(host.port))"
            echo "metadata $(tcp-connect 169.254.169.254 80 2)"
            ip link set eth0 down 2>/dev/null; echo "link $?"
            """
        let tetherCommand = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                             Binaries.product("tether").path, "run", "--rootfs", rootfs, "--network", "egress"] + hostOptions
            + ["--", "sh", "-c", guestScript]
        let quoted = tetherCommand.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
        let wrapper = tunOpen ? "exec \(quoted)" : """
            set -e
            mkdir -p '\(devices)'
            mount -t tmpfs -o mode=0755 tmpfs '\(devices)'
            mknod -m 0666 '\(devices)/tun' c 10 200
            mount --bind '\(devices)/tun' /dev/net/tun
            exec \(quoted)
            """
        let environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": top.path, "TETHER_HOME": tetherHome,
                           "TETHER_AGENT_STATIC": try Fixtures.staticAgent()]
        let argv = tunOpen ? ["/bin/sh", "-c", wrapper] : ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", wrapper]
        let result = try Fixtures.run(argv, environment: environment)
        #expect(result.status == 0, "rootless egress: \(result.stdout)\(result.stderr)")
        let report = Self.results(result.stdout)
        #expect(result.stdout.hasPrefix("0\n"), "rootless: the guest is not root inside: \(result.stdout)")
        #expect(report["host"] == "connected", "rootless egress: the host's \(hostAddress) was not reached: \(result.stdout)\(result.stderr)")
        #expect(host.acceptedAConnection())
        #expect(report["metadata"] == "failed EHOSTUNREACH", "rootless egress: 169.254.169.254 was not refused: \(result.stdout)")
        #expect(report["link"] != "0", "rootless egress: guest root changed the namespace's interface")
    }

    /// cp(1) of one file; true when it worked.
    func copyfile(_ source: String, _ target: String) -> Bool {
        (try? Fixtures.run(["/bin/cp", source, target]).status) == 0
    }

    @Test func networkChoicesAreCheckedBeforeAnythingStarts() throws {
        let bad = try tether(["boot", "--name", "x", "--network", "egress", "--allow-net", "10.1.2.3/8"])
        #expect(bad.status != 0 && bad.stderr.contains("10.0.0.0/8"), "\(bad.stderr)")
        let notEgress = try tether(["boot", "--name", "x", "--rootfs", "/", "--allow-net", "10.0.0.0/8"])
        #expect(notEgress.status != 0 && notEgress.stderr.contains("--network egress"), "\(notEgress.stderr)")
        let krun = try tether(["boot", "--name", "x", "--rootfs", "/", "--backend", "krun", "--network", "egress"])
        #expect(krun.status != 0 && krun.stderr.contains("namespace backend"), "\(krun.stderr)")
        #expect(sandboxes.entry("x").state == nil, "a refused network choice still started a sandbox")
    }

    @Test(.timeLimit(.minutes(5)))
    func krunNetworkHostGetsAnEmptyPortMap() throws {
        try Fixtures.requireRoot()
        let stub = try KrunBackendTests.buildStub("portmap")
        let sandboxes = KrunBackendTests.sandboxes("portmap")
        let config = SandboxConfig(name: "tsi", rootfs: try Fixtures.busyboxRootfs(), backend: .krun, network: .host,
                                   krunLibrary: stub.appendingPathComponent("libkrun.so.1").path)
        let state = try sandboxes.boot(config)
        defer { _ = try? sandboxes.stop("tsi", graceMs: 2_000) }
        #expect(state.warnings.contains(NetworkMode.hostWarning))
        let calls = KrunBackendTests.calls(in: stub)
        // TSI with no port map would expose every listening guest port on the host.
        #expect(calls.contains("krun_set_port_map(0, []) = 0"), "\(calls)")
        #expect(!calls.contains { $0.hasPrefix("krun_disable_implicit_vsock") })
    }
}
