#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherBoot
import TetherPosix
import Testing

/// The launcher's join path (`joinNetworkFD`, what `--network egress` uses): the sandbox's first
/// process starts in an existing network namespace instead of a new one, is still the caller's
/// own child, and a namespace that cannot be joined is a typed launch failure.
@Suite(.serialized) struct NamespaceJoinTests {
    /// A network namespace of its own, held by a sleeping process (killed by `end`).
    struct HeldNetwork {
        let holder: pid_t
        let fd: CInt
        var inode: UInt64 {
            var st = stat()
            fstat(fd, &st)
            return UInt64(st.st_ino)
        }
        func end() {
            close(fd)
            kill(holder, SIGKILL)
            var status: CInt = 0
            while waitpid(holder, &status, 0) < 0 && errno == EINTR {}
        }
    }

    static func holdNetwork() throws -> HeldNetwork {
        var launcher = NamespaceLauncher(path: "/bin/sleep", arguments: ["sleep", "60"])
        launcher.namespaces = [.network]
        launcher.newSession = true
        var fd: CInt = -1
        let pid = try launcher.launch { (pid) throws(LaunchFailure) in
            fd = open("/proc/\(pid)/ns/net", O_RDONLY | O_CLOEXEC)
            return -1
        }
        guard fd >= 0 else { throw FixtureError.failed("opening the holder's network namespace: \(Errno.current)") }
        return HeldNetwork(holder: pid, fd: fd)
    }

    @Test(.timeLimit(.minutes(2)))
    func theFirstProcessStartsInTheJoinedNamespaceAsOurChild() throws {
        try Fixtures.requireRoot()
        let network = try Self.holdNetwork()
        defer { network.end() }
        let (output, status) = try NamespaceLauncherTests().runInside("""
            mount -t proc proc /proc && readlink /proc/self/ns/net >&3
            """) { launcher in
            launcher.namespaces = Namespaces.sandbox
            launcher.joinNetworkFD = network.fd
        }
        // runInside reaped it with waitpid: the intermediate made it our child (CLONE_PARENT).
        #expect(status == 0, "\(output)")
        #expect(output == "net:[\(network.inode)]\n", "the child is not in the joined namespace: \(output)")
    }

    @Test(.timeLimit(.minutes(2)))
    func aDescriptorThatIsNoNetworkNamespaceIsATypedLaunchFailure() throws {
        try Fixtures.requireRoot()
        let notANamespace = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(notANamespace) }
        var launcher = NamespaceLauncher(path: "/bin/true", arguments: ["true"])
        launcher.namespaces = [.pid]
        launcher.joinNetworkFD = notANamespace
        #expect(throws: LaunchFailure(stage: .namespace, errno: Errno(rawValue: EINVAL))) { _ = try launcher.launch() }
    }
}
