#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherPosix

/// Host programs the boot runs and waits for (mkfs.ext4 for a layer image, newuidmap and
/// newgidmap for a rootless id range).
enum HostProgram {
    /// A program of the host's own (not the sandbox's), from the usual system directories.
    static func find(_ name: String) -> String? {
        ["/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"].map { $0 + name }.first { access($0, X_OK) == 0 }
    }

    /// Runs a host program with stdin /dev/null and its output on our stderr; its wait status.
    static func run(_ arguments: [String]) -> CInt {
        var launcher = NamespaceLauncher(path: arguments[0], arguments: arguments, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        launcher.namespaces = []
        launcher.newSession = false
        let devNull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { if devNull >= 0 { close(devNull) } }
        launcher.descriptors = [(devNull, 0), (2, 1), (2, 2)]
        guard let pid = try? launcher.launch() else { return -1 }
        return reap(pid)
    }

    /// Waits for a helper of ours (a host program, pasta) and returns its wait status.
    static func reap(_ pid: pid_t) -> CInt {
        var status: CInt = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // The supervisor blocks SIGCHLD and reads it from a signalfd, where a stop request and
        // the sandbox's end also arrive: take this helper's SIGCHLD out of the queue, or the
        // boot would read it as "stopped while booting". (The sandbox's own exit is seen
        // through its pidfd, not through SIGCHLD.)
        var pending = sigset_t()
        sigemptyset(&pending)
        sigaddset(&pending, SIGCHLD)
        var noWait = timespec()
        _ = sigtimedwait(&pending, nil, &noWait)
        return status
    }
}
