#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import Foundation
import TetherPosix

extension BootStage {
    /// The `egress` network: its namespace, its nftables rules, pasta.
    public static let network = BootStage(rawValue: "network")
}

/// The network of an `--network egress` sandbox (namespace backend): a network namespace made
/// apart from the guest's user namespace, the `EgressRules` installed in it by the host's `nft`,
/// and pasta (Debian's `passt` package) attached to it, which carries the guest's TCP, UDP and
/// DNS out through sockets of the host.
///
/// Who owns the namespace is the point (SECURITY.md): as root it is made in the host's initial
/// user namespace; rootless, in an outer user namespace of the user's (its maps are the ones the
/// guest's would have had), and the guest's user namespace is then made inside that one. Either
/// way the guest's root has no capability over the network namespace: it cannot change its
/// rules, routes, addresses or interfaces.
///
/// Owned by the supervisor for the sandbox's life: the namespace descriptors and pasta (its
/// child, with a pidfd the supervisor watches; `stop()` ends it with the sandbox).
public final class EgressNetwork {
    /// The guest's side, fixed: a private /24 like a user-mode network's, so the guest's own
    /// address is never one of the host's.
    public static let guestAddress = "10.0.2.15"
    public static let prefixLength = 24
    public static let gateway = "10.0.2.2"
    /// pasta forwards DNS sent here to the host's first resolver (`--dns-forward`).
    public static let nameserver = "10.0.2.3"
    public static let interface = "eth0"
    /// How long pasta has to configure the guest's interface.
    static let configureTimeoutMs: UInt64 = 10_000

    /// The network namespace, and (rootless) the user namespace that owns it.
    let networkFD: CInt
    let ownerFD: CInt
    /// Rootless: the guest's maps inside `ownerFD`'s namespace (the identity over its ids).
    let innerMaps: (uids: String, gids: String)?
    /// A range given to `--allow-net` holds 127.0.0.1: the gateway address then leads to the
    /// host's loopback (pasta's gateway mapping), and is allowed.
    public let loopbackOpen: Bool
    /// pasta's own pid (state.json shows it), and its keeper's: the supervisor's child, which
    /// ends as pasta ends (see `startPasta`).
    public private(set) var pastaPid: pid_t = 0
    var keeperPid: pid_t = 0
    /// A pidfd of the keeper: readable once pasta ended (the supervisor watches it).
    public private(set) var pastaFD: CInt = -1
    let logPath: String

    init(networkFD: CInt, ownerFD: CInt, innerMaps: (uids: String, gids: String)?, loopbackOpen: Bool, logPath: String) {
        self.networkFD = networkFD
        self.ownerFD = ownerFD
        self.innerMaps = innerMaps
        self.loopbackOpen = loopbackOpen
        self.logPath = logPath
    }

    deinit {
        stop()
        close(networkFD)
        if ownerFD >= 0 { close(ownerFD) }
    }

    /// The ranges of `--allow-net`, checked (the CLI checked them already; config.json may be old).
    static func allowedRanges(_ config: SandboxConfig) throws(BootFailure) -> [NetworkRange] {
        var ranges: [NetworkRange] = []
        for text in config.allowNet ?? [] {
            do { ranges.append(try NetworkRange(parsing: text)) } catch {
                throw BootFailure(stage: .network, errno: EINVAL, message: "--allow-net: \(error)")
            }
        }
        return ranges
    }

    /// Makes the namespace with its rules and starts pasta on it. Throws a typed failure naming
    /// the missing package or the step that failed.
    static func create(_ config: SandboxConfig, mapping: IDMapping, paths: SandboxPaths) throws(BootFailure) -> EgressNetwork {
        let ranges = try allowedRanges(config)
        guard let nft = HostProgram.find("nft"), let pasta = HostProgram.find("pasta") else {
            throw BootFailure(stage: .network, errno: ENOENT,
                              message: "--network egress needs pasta (Debian's passt package) and nft (nftables) on the host",
                              hint: "apt-get install passt nftables (scripts/deps.sh installs both)")
        }
        if geteuid() != 0 && access("/dev/net/tun", R_OK | W_OK) != 0 {
            // pasta makes its tap device through /dev/net/tun as the user; Debian's udev rules
            // make it 0666, a host that closed it refuses rootless user-mode networking.
            throw BootFailure(stage: .network, errno: errno,
                              message: "rootless --network egress needs /dev/net/tun to be readable and writable by you (\(Errno.current))",
                              hint: "chmod 0666 /dev/net/tun (Debian's default), or boot as root")
        }
        let loopbackOpen = ranges.contains { $0.contains("127.0.0.1") }
        let rules = EgressRules(allowed: ranges + (loopbackOpen ? [try! NetworkRange(parsing: gateway)] : []),
                                nameserver: nameserver)
        let rootless = geteuid() != 0
        let (networkFD, ownerFD) = try makeNamespace(nft: nft, rules: rules.text, rootless: rootless, mapping: mapping)
        var innerMaps: (uids: String, gids: String)?
        if rootless {
            // The guest's ids inside the outer namespace: the same ids, one to one.
            let count = { (ranges: [IDMapping.Range]) in ranges.map(\.count).reduce(0, +) }
            innerMaps = ("0 0 \(count(mapping.uids))\n", "0 0 \(count(mapping.gids))\n")
        }
        let network = EgressNetwork(networkFD: networkFD, ownerFD: ownerFD, innerMaps: innerMaps, loopbackOpen: loopbackOpen,
                                    logPath: paths.directory.appendingPathComponent("network.log").path)
        try network.startPasta(pasta)
        return network
    }

    /// Runs `nft -f` in a new network namespace (rootless: in a new user namespace too, whose
    /// root it is), with lo up and ports below 1024 open to the guest's root (which is not root
    /// of this namespace). Returns the namespace descriptors, taken while nft waited to start.
    private static func makeNamespace(nft: String, rules: String, rootless: Bool, mapping: IDMapping) throws(BootFailure) -> (CInt, CInt) {
        let pipe: TetherPosix.Pipe
        do { pipe = try TetherPosix.Pipe() } catch {
            throw BootFailure(stage: .network, errno: error.rawValue, message: "pipe for the egress rules: \(error)")
        }
        let input = pipe.readEnd
        do {
            let writer = pipe.writeEnd
            // A few hundred bytes: far below a pipe's buffer, so this cannot block.
            do { try FileIO.writeAll(writer.raw, Array(rules.utf8)) } catch {
                throw BootFailure(stage: .network, errno: error.rawValue, message: "writing the egress rules to nft: \(error)")
            }
        }
        var launcher = NamespaceLauncher(path: nft, arguments: [nft, "-f", "/dev/stdin"],
                                         environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        launcher.namespaces = rootless ? [.user, .network] : [.network]
        launcher.setGroups = !mapping.denySetgroups
        launcher.newSession = true
        launcher.parentDeathSignal = SIGKILL
        launcher.sysctls = [("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0")]
        launcher.descriptors = [(input.raw, 0), (2, 1), (2, 2)]
        var networkFD: CInt = -1
        var ownerFD: CInt = -1
        let pid: pid_t
        do {
            pid = try launcher.launch { (pid) throws(LaunchFailure) in
                if rootless { try UserNamespace.writeMaps(pid: pid, mapping) }
                networkFD = open("/proc/\(pid)/ns/net", O_RDONLY | O_CLOEXEC)
                if rootless { ownerFD = open("/proc/\(pid)/ns/user", O_RDONLY | O_CLOEXEC) }
                guard networkFD >= 0, !rootless || ownerFD >= 0 else { throw LaunchFailure(stage: .namespace, errno: .current) }
                return -1
            }
        } catch {
            if networkFD >= 0 { close(networkFD) }
            if ownerFD >= 0 { close(ownerFD) }
            throw BootFailure(stage: .network, errno: error.errno.rawValue,
                              message: "creating the egress network namespace (\(error.stage)) failed: \(error.errno)",
                              hint: rootless ? "the host must allow unprivileged user namespaces" : nil)
        }
        let status = HostProgram.reap(pid)
        guard csys_wifexited(status) != 0 && csys_wexitstatus(status) == 0 else {
            close(networkFD)
            if ownerFD >= 0 { close(ownerFD) }
            throw BootFailure(stage: .network, errno: EIO,
                              message: "nft could not install the egress rules (it \(Self.describe(status))); its message is in supervisor.log")
        }
        return (networkFD, ownerFD)
    }

    /// pasta's options: the guest's fixed addresses, DNS forwarding, no port forwarding in
    /// either direction (its default, `auto`, would bind every port the guest listens on on the
    /// host, and make every port the host listens on reachable at the guest's own loopback),
    /// and no gateway mapping to the host's loopback unless `--allow-net` opened it. Quiet: its
    /// summary of the addresses it set up would reach whoever reads the supervisor's stdout
    /// (the terminal of `tether boot`); problems still go to its log file.
    func pastaArguments(_ pasta: String) -> [String] {
        var arguments = [pasta, "--foreground", "--config-net", "--ns-ifname", Self.interface,
                         "--address", Self.guestAddress, "--netmask", "\(Self.prefixLength)", "--gateway", Self.gateway,
                         "--dns-forward", Self.nameserver,
                         "--tcp-ports", "none", "--udp-ports", "none", "--tcp-ns", "none", "--udp-ns", "none",
                         "--log-file", logPath, "--quiet", "--netns", "/proc/self/fd/3"]
        if !loopbackOpen { arguments.append("--no-map-gw") }
        if ownerFD >= 0 {
            arguments += ["--userns", "/proc/self/fd/4"]
        } else {
            // As root pasta would switch to nobody before joining the namespace, which is owned
            // by the host's initial user namespace and so needs CAP_SYS_ADMIN there: it keeps
            // root's uid with that, CAP_NET_ADMIN and CAP_NET_BIND_SERVICE only.
            arguments += ["--runas", "0:0"]
        }
        return arguments
    }

    /// pasta runs under a keeper (csys_spawn_kept): pasta changes its credentials (root:
    /// `--runas`; rootless: joining the user namespace), which clears a parent-death signal, and
    /// it must still end when the supervisor does, however the supervisor ends.
    private func startPasta(_ pasta: String) throws(BootFailure) {
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { if devNull >= 0 { close(devNull) } }
        var map: [CInt] = [devNull, 0, 2, 1, 2, 2, networkFD, 3]
        if ownerFD >= 0 { map += [ownerFD, 4] }
        var program: pid_t = 0
        let keeper = CStringArray.with(pastaArguments(pasta)) { argv in
            CStringArray.with(["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]) { envp in
                map.withUnsafeBufferPointer { pairs in
                    csys_spawn_kept(pasta, argv, envp, pairs.baseAddress, CInt(map.count / 2), &program)
                }
            }
        }
        guard keeper > 0 else {
            throw BootFailure(stage: .network, errno: -keeper, message: "starting pasta (\(pasta)) failed: \(Errno(rawValue: -keeper))")
        }
        keeperPid = keeper
        pastaPid = program
        pastaFD = csys_pidfd_open(keeper, 0)
    }

    /// Waits until pasta has configured the guest's interface: the sandbox's first process
    /// (`pid`, in the namespace) sees a default route. Nil when it has; the failure otherwise.
    public func waitUntilConfigured(sandboxPid pid: pid_t) -> BootFailure? {
        let deadline = Clock.monotonicNs() + Self.configureTimeoutMs * 1_000_000
        while Clock.monotonicNs() < deadline {
            if hasDefaultRoute(pid) { return nil }
            if pastaFD >= 0 && Handshake.wait(fds: [pastaFD], timeoutMs: 5) == 0 {
                return BootFailure(stage: .network, errno: ECHILD,
                                   message: "pasta \(reap()) before it configured the sandbox's network", hint: "see \(logPath)")
            }
        }
        return BootFailure(stage: .network, errno: ETIMEDOUT,
                           message: "pasta did not configure the sandbox's network within \(Self.configureTimeoutMs / 1000) s",
                           hint: "see \(logPath)")
    }

    /// /proc/PID/net/route: the IPv4 routes of PID's network namespace (destination 00000000
    /// is the default route).
    private func hasDefaultRoute(_ pid: pid_t) -> Bool {
        guard let bytes = try? FileIO.readFile("/proc/\(pid)/net/route", limit: 1 << 16) else { return false }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").dropFirst()
            .contains { $0.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().first == "00000000" }
    }

    /// Reaps pasta after its pidfd became readable; how it ended.
    @discardableResult
    public func reap() -> String {
        guard keeperPid > 0 else { return "was not running" }
        let status = HostProgram.reap(keeperPid)
        keeperPid = 0
        pastaPid = 0
        if pastaFD >= 0 { close(pastaFD) }
        pastaFD = -1
        return Self.describe(status)
    }

    static func describe(_ status: CInt) -> String {
        csys_wifexited(status) != 0 ? "exited with status \(csys_wexitstatus(status))" : "was killed by signal \(csys_wtermsig(status))"
    }

    /// Ends pasta (SIGTERM to its keeper, which passes it on and SIGKILLs pasta after a second)
    /// and reaps the keeper.
    public func stop() {
        guard keeperPid > 0 else { return }
        kill(keeperPid, SIGTERM)
        if pastaFD < 0 || Handshake.wait(fds: [pastaFD], timeoutMs: 3_000) != 0 {
            kill(pastaPid, SIGKILL)
            kill(keeperPid, SIGKILL)
        }
        reap()
    }
}

extension SandboxConfig {
    /// A network choice this sandbox cannot have, checked before anything starts.
    public var networkProblem: BootFailure? {
        if network == .egress && backend == .krun {
            // libkrun's own networking (TSI) makes the guest's sockets host sockets with no
            // destination filter, and pasta through a virtio-net device is not wired up here.
            return BootFailure(stage: .network, errno: ENOTSUP,
                               message: "--network egress needs the namespace backend (krun has no filtered egress yet)",
                               hint: "boot with --backend namespace, or --network none")
        }
        if !(allowNet ?? []).isEmpty && network != .egress {
            return BootFailure(stage: .network, errno: EINVAL,
                               message: "--allow-net applies to --network egress only (this sandbox's network is \(network.rawValue))",
                               hint: "add --network egress")
        }
        do { _ = try EgressNetwork.allowedRanges(self) } catch { return error }
        return nil
    }
}
