#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherBoot
import TetherPosix
import Testing

/// The namespace launcher on its own, with busybox programs as PID 1 (no agent involved): what
/// the sandbox's first process sees is checked from inside, through an inherited pipe.
@Suite(.serialized) struct NamespaceLauncherTests {
    /// Launches `script` as `sh -c` PID 1 in the busybox tree; returns what it wrote to fd 3 and
    /// its wait status.
    func runInside(_ script: String, configure: (inout NamespaceLauncher) -> Void = { _ in }) throws -> (output: String, status: CInt) {
        try Fixtures.requireRoot()
        let rootfs = try Fixtures.busyboxRootfs()
        let pipe = Fixtures.pipe()
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(devNull) }
        var launcher = NamespaceLauncher(path: "/bin/sh", arguments: ["sh", "-c", script], environment: ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"])
        launcher.rootfs = rootfs
        launcher.hostname = "launcher-test"
        launcher.descriptors = [(devNull, 0), (devNull, 1), (pipe.write, 2), (pipe.write, 3)]
        configure(&launcher)
        defer { close(pipe.read) }
        let pid: pid_t
        do {
            pid = try launcher.launch()
        } catch {
            close(pipe.write)
            throw error
        }
        close(pipe.write)
        let output = Fixtures.readAll(pipe.read)
        var status: CInt = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (output, status)
    }

    @Test(.timeLimit(.minutes(5)))
    func firstProcessIsPID1InsideTheRootfs() throws {
        let (output, status) = try runInside("""
            echo "pid=$$" >&3
            echo "host=$(hostname)" >&3
            echo "root=$(ls / | tr '\\n' ' ')" >&3
            mount -t proc proc /proc && echo "pids=$(ls /proc | grep '^[0-9]' | tr '\n' ' ')" >&3
            echo "comm1=$(cat /proc/1/comm)" >&3
            """)
        #expect(status == 0)
        let lines = output.split(separator: "\n").map(String.init)
        #expect(lines.contains("pid=1"))
        #expect(lines.contains("host=launcher-test"))
        let root = lines.first { $0.hasPrefix("root=") } ?? ""
        // The busybox tree's root, not the host's (whose / has /work and /opt).
        #expect(root.contains("sbin") && root.contains("etc") && root.contains("init"))
        #expect(!root.contains("work") && !root.contains("opt"))
        // A fresh PID namespace: sh is PID 1 and only the script's own few processes exist (a
        // host PID namespace would show hundreds, with large numbers).
        let pids = (lines.first { $0.hasPrefix("pids=") } ?? "").dropFirst(5).split(separator: " ").compactMap { Int($0) }
        #expect(pids.contains(1) && pids.count <= 5 && pids.allSatisfy { $0 < 20 }, "processes in the sandbox: \(pids)")
        #expect(lines.contains("comm1=sh"))
    }

    @Test(.timeLimit(.minutes(5)))
    func hostMountTableIsUntouched() throws {
        let before = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        let (_, status) = try runInside("mount -t tmpfs none /mnt && mount -t proc proc /proc && echo ok >&3")
        #expect(status == 0)
        let after = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        #expect(before == after)
    }

    @Test(.timeLimit(.minutes(5)))
    func networkNamespaceHasOnlyLoopbackAndItIsUp() throws {
        let (output, status) = try runInside("ip -o link >&3") { $0.namespaces = Namespaces.sandbox.union(.network) }
        #expect(status == 0)
        let links = output.split(separator: "\n")
        #expect(links.count == 1)
        #expect(links.first?.contains("lo:") == true && links.first?.contains("UP") == true, "\(output)")
    }

    @Test(.timeLimit(.minutes(5)))
    func onlyMappedDescriptorsAreInherited() throws {
        // fd 5 is open in this process (CLOEXEC or not, the child gets only what it is given).
        let extra = open("/dev/null", O_RDONLY)
        defer { close(extra) }
        let (output, status) = try runInside("ls /proc/self/fd >&3 2>/dev/null; mount -t proc proc /proc; ls /proc/self/fd | tr '\\n' ' ' >&3")
        #expect(status == 0)
        // 0 1 2 3, plus the descriptor ls itself has open on the directory.
        let fds = output.split(separator: "\n").last?.split(separator: " ").compactMap { Int($0) } ?? []
        #expect(fds.filter { $0 != 3 && $0 > 2 }.count <= 1, "descriptors in the sandbox: \(fds)")
        #expect(!fds.contains(Int(extra)) || Int(extra) <= 3)
    }

    @Test(.timeLimit(.minutes(5)))
    func missingProgramIsAnExecFailureWithItsErrno() throws {
        try Fixtures.requireRoot()
        var launcher = NamespaceLauncher(path: "/no/such/agent", arguments: ["agent"])
        launcher.rootfs = try Fixtures.busyboxRootfs()
        #expect(throws: LaunchFailure(stage: .agentExec, errno: Errno(rawValue: ENOENT))) { _ = try launcher.launch() }
    }

    @Test(.timeLimit(.minutes(5)))
    func missingRootfsIsARootfsFailure() throws {
        try Fixtures.requireRoot()
        var launcher = NamespaceLauncher(path: "/bin/sh", arguments: ["sh"])
        launcher.rootfs = "/no/such/rootfs"
        #expect(throws: LaunchFailure(stage: .rootfs, errno: Errno(rawValue: ENOENT))) { _ = try launcher.launch() }
    }

    @Test(.timeLimit(.minutes(5)))
    func overlayKeepsTheRootfsUnchanged() throws {
        let scratch = Fixtures.temporaryDirectory("overlay")
        defer { try? FileManager.default.removeItem(at: scratch) }
        for dir in ["upper", "work", "root"] {
            try FileManager.default.createDirectory(at: scratch.appendingPathComponent(dir), withIntermediateDirectories: true)
        }
        let rootfs = try Fixtures.busyboxRootfs()
        let (output, status) = try runInside("echo written > /etc/overlay-test && cat /etc/overlay-test >&3") {
            $0.mountpoint = scratch.appendingPathComponent("root").path
            $0.overlayOptions = "lowerdir=\(rootfs),upperdir=\(scratch.path)/upper,workdir=\(scratch.path)/work"
        }
        #expect(status == 0)
        #expect(output == "written\n")
        #expect(!FileManager.default.fileExists(atPath: rootfs + "/etc/overlay-test"))
        #expect(FileManager.default.fileExists(atPath: scratch.path + "/upper/etc/overlay-test"))
    }
}
