#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix

/// An init system the agent hands PID 1 to (`--init PATH|auto`), and how
/// to ask it to power off in its own language.
///
/// The hand-off: the agent forks; the parent (PID 1) puts the signal mask and dispositions
/// back to their defaults and execs the init with the agent's environment (so a backend can
/// pass `container=...` through); the child carries on as the agent, in its own session, as a
/// child subreaper. Before the fork the agent mounts only /proc, /sys and /run (both systemd
/// and OpenRC skip API file systems that are already mounted, and openrc-init needs /run for
/// its control FIFO). /dev is left to the init in a VM, where the kernel's devtmpfs must stay
/// visible; in a PID namespace (the namespace backend) the agent also sets up the minimal
/// container /dev that systemd expects from a container manager.
public struct InitSystem: Equatable, Sendable {
    public enum Flavor: String, Sendable {
        case systemd, busybox, openrc, s6, sysvinit, other
    }

    /// What to execve.
    public var path: String
    /// argv[0] (`init` for busybox, whose applet is chosen by it).
    public var argv0: String
    public var flavor: Flavor

    /// Probed in this order by `--init auto`; busybox last, run as its `init` applet.
    /// /bin/init last: busybox roots may link the applet only there; exec'd by that name the
    /// init's comm is `init`, as tools expect.
    public static let autoCandidates = ["/sbin/init", "/lib/systemd/systemd", "/usr/lib/systemd/systemd", "/sbin/openrc-init",
                                        "/bin/init"]
    public static let busyboxCandidates = ["/bin/busybox", "/sbin/busybox", "/usr/bin/busybox"]

    /// Finds the init to run; nil with `auto` when there is none (the agent stays PID 1).
    static func resolve(_ choice: AgentOptions.InitProgram) throws(BootError) -> InitSystem? {
        switch choice {
        case .path(let path):
            guard access(path, X_OK) == 0 else {
                let error = Errno.current
                throw BootError(stage: "init", errno: error.rawValue, message: "--init \(path) cannot be executed: \(error)")
            }
            return InitSystem(path: path, argv0: path, flavor: flavor(of: path))
        case .auto:
            let me = realPath("/proc/self/exe")
            for path in autoCandidates where access(path, X_OK) == 0 {
                // /sbin/init may be this very agent: handing PID 1 to it would loop.
                if let me, realPath(path) == me { continue }
                return InitSystem(path: path, argv0: path, flavor: flavor(of: path))
            }
            for path in busyboxCandidates where access(path, X_OK) == 0 {
                return InitSystem(path: path, argv0: "init", flavor: .busybox)
            }
            return nil
        }
    }

    /// Tells the flavor from the file the path leads to.
    static func flavor(of path: String) -> Flavor {
        let resolved = realPath(path) ?? path
        let name = resolved.split(separator: "/").last.map(String.init) ?? resolved
        switch name {
        case "systemd": return .systemd
        case "openrc-init": return .openrc
        case "s6-svscan", "s6-linux-init": return .s6
        case "busybox": return .busybox
        default: break
        }
        // A busybox hard link named init.
        var st = stat(), bb = stat()
        if stat(resolved, &st) == 0 {
            for candidate in busyboxCandidates where stat(candidate, &bb) == 0 && bb.st_ino == st.st_ino && bb.st_dev == st.st_dev {
                return .busybox
            }
        }
        return name == "init" ? .sysvinit : .other
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Forks. In the parent (PID 1) it execs the init and never returns (a failed exec is a
    /// boot failure: reported, then exit). In the child it returns, a new session leader and
    /// child subreaper, to go on as the agent. The init keeps every capability it was given
    /// (systemd needs SYS_ADMIN and more); only the child lowers its own, once it serves
    /// (`GuestCapabilities.dropAgentBoundingSet`).
    func handOff() throws(BootError) {
        let pid = fork()
        if pid < 0 {
            let error = Errno.current
            throw BootError(stage: "init", errno: error.rawValue, message: "cannot fork to hand PID 1 to \(path): \(error)")
        }
        if pid == 0 {
            _ = setsid()
            _ = csys_set_child_subreaper()
            return
        }
        var empty = sigset_t()
        sigemptyset(&empty)
        _ = sigprocmask(SIG_SETMASK, &empty, nil)
        _ = signal(SIGPIPE, SIG_DFL)
        let argv = CStringArray([argv0])
        execv(path, argv.pointers)
        let error = Errno.current
        Boot.report(BootError(stage: "init", errno: error.rawValue, message: "cannot execute the init \(path): \(error)"))
        exit(1)
    }

    /// Asks the init (PID 1) to power off, once, in its own language: systemd SIGRTMIN+4
    /// (never SIGTERM, on which systemd re-executes itself), busybox init and s6-linux-init's
    /// s6-svscan SIGUSR2, openrc-init `poweroff` on /run/openrc/init.ctl, sysvinit a runlevel 0
    /// request on /run/initctl, anything else SIGTERM. Where the control FIFO cannot be
    /// written, SIGTERM instead (openrc-init halts on it). Returns what it did, for the log.
    func requestPowerOff() -> String {
        switch flavor {
        case .systemd:
            _ = kill(1, Signals.realtimeMin + 4)
            return "sent SIGRTMIN+4 to systemd"
        case .busybox, .s6:
            _ = kill(1, SIGUSR2)
            return "sent SIGUSR2 to \(flavor.rawValue) init"
        case .openrc:
            if Self.writeFIFO("/run/openrc/init.ctl", Array("poweroff".utf8)) { return "wrote poweroff to /run/openrc/init.ctl" }
        case .sysvinit:
            if Self.writeFIFO("/run/initctl", Self.sysvinitRunlevel0) || Self.writeFIFO("/dev/initctl", Self.sysvinitRunlevel0) {
                return "asked sysvinit for runlevel 0 on initctl"
            }
        case .other:
            break
        }
        _ = kill(1, SIGTERM)
        return "sent SIGTERM to the init"
    }

    /// sysvinit's `struct init_request` (initreq.h): magic, INIT_CMD_RUNLVL, runlevel '0',
    /// sleeptime 0, then 368 bytes of zeros; 384 bytes in all, host byte order.
    static var sysvinitRunlevel0: [UInt8] {
        var bytes: [UInt8] = []
        for value: Int32 in [0x0309_1969, 1, Int32(UInt8(ascii: "0")), 0] {
            withUnsafeBytes(of: value) { bytes += $0 }
        }
        return bytes + [UInt8](repeating: 0, count: 368)
    }

    /// One nonblocking write to a FIFO that must have a reader (ENXIO otherwise).
    private static func writeFIFO(_ path: String, _ bytes: [UInt8]) -> Bool {
        let fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return false }
        let fifo = OwnedFD(adopting: fd)
        let written = bytes.withUnsafeBytes { raw in try? FileIO.write(fifo.raw, raw) }
        return written == .wrote(bytes.count)
    }
}
