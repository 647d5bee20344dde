#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys

/// Signal masks and signalfd(2). Block signals before any thread exists: a blocked signal is
/// only safe to read from a signalfd if every thread blocks it.
public enum Signals {
    /// C: sigprocmask(2) SIG_BLOCK
    public static func block(_ signals: [CInt]) throws(Errno) {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        _ = try retrying { sigprocmask(SIG_BLOCK, &set, nil) }
    }

    /// C: signal(2) SIG_IGN
    public static func ignore(_ signal: CInt) {
        _ = Glibc.signal(signal, SIG_IGN)
    }

    /// Opens a nonblocking CLOEXEC signalfd for `signals` (which must already be blocked).
    /// C: signalfd(2)
    public static func openSignalFD(_ signals: [CInt]) throws(Errno) -> OwnedFD {
        var set = sigset_t()
        sigemptyset(&set)
        for s in signals { sigaddset(&set, s) }
        let fd = try retrying { signalfd(-1, &set, CInt(SFD_CLOEXEC | SFD_NONBLOCK)) }
        return OwnedFD(adopting: fd)
    }

    /// Reads every pending signal from a nonblocking signalfd, returning their numbers.
    public static func drain(_ fd: CInt) -> [CInt] {
        var received: [CInt] = []
        var info = signalfd_siginfo()
        while true {
            let n = Glibc.read(fd, &info, MemoryLayout<signalfd_siginfo>.size)
            if n == MemoryLayout<signalfd_siginfo>.size {
                received.append(CInt(info.ssi_signo))
                continue
            }
            if n < 0 && errno == EINTR { continue }
            return received
        }
    }

    /// The first real-time signal number as the C library defines it (systemd's SIGRTMIN+4
    /// power-off request is counted from here).
    public static var realtimeMin: CInt { csys_sigrtmin() }
}
