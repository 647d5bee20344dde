#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys

/// One process pinned by a pidfd (pidfd_open(2)): a signal sent through it reaches that
/// process or fails with ESRCH, never another process that reused its PID after it ended.
///
/// Owns the pidfd (closed when the handle goes). Any thread; it holds no other state.
public struct ProcessHandle: ~Copyable {
    public let pid: pid_t
    public let fd: OwnedFD

    /// pidfd_open(2) of `pid`: ESRCH when no such process exists.
    public init(pid: pid_t) throws(Errno) {
        guard pid > 0 else { throw Errno(rawValue: ESRCH) }
        let raw = csys_pidfd_open(pid, 0)
        guard raw >= 0 else { throw Errno(rawValue: -raw) }
        self.pid = pid
        self.fd = OwnedFD(adopting: raw)
    }

    /// Whether the process has not ended yet (a zombie has ended). pidfd_send_signal(2) with
    /// signal 0 checks existence only; a pidfd is readable once the process has exited.
    public var isAlive: Bool {
        var pollfd = pollfd(fd: fd.raw, events: Int16(POLLIN), revents: 0)
        guard poll(&pollfd, 1, 0) == 0 else { return false }
        return (try? sendSignal(0)) != nil
    }

    /// Sends `signal` through the pidfd. With `value`, the receiver sees it as a sigqueue(3)
    /// value (si_code SI_QUEUE, si_int); the kernel accepts a caller-made siginfo for another
    /// process only with a negative si_code such as SI_QUEUE, and takes si_pid and si_uid as given.
    public func sendSignal(_ signal: CInt, value: Int32? = nil) throws(Errno) {
        var info = siginfo_t()
        let rc: Int
        if let value {
            info.si_signo = signal
            info.si_code = CInt(SI_QUEUE)
            info._sifields._rt.si_pid = getpid()
            info._sifields._rt.si_uid = getuid()
            info._sifields._rt.si_sigval.sival_int = value
            rc = withUnsafePointer(to: &info) { pointer in
                csys_raw_syscall(ProcessHandle.pidfdSendSignal, Int(fd.raw), Int(signal), Int(bitPattern: pointer), 0, 0, 0)
            }
        } else {
            rc = csys_raw_syscall(ProcessHandle.pidfdSendSignal, Int(fd.raw), Int(signal), 0, 0, 0, 0)
        }
        if rc < 0 { throw Errno.current }
    }

    /// Waits until the process has exited or `timeoutMs` passed (negative: no deadline).
    /// True when it has exited.
    public func waitForExit(timeoutMs: Int32) -> Bool {
        var pollfd = pollfd(fd: fd.raw, events: Int16(POLLIN), revents: 0)
        let forever = timeoutMs < 0
        let deadline = Clock.monotonicNs() + UInt64(max(0, timeoutMs)) * 1_000_000
        while true {
            let left: Int32 = forever ? -1 : Int32(clamping: (deadline - min(deadline, Clock.monotonicNs()) + 999_999) / 1_000_000)
            let n = poll(&pollfd, 1, left)
            if n < 0 && errno == EINTR { continue }
            return n > 0
        }
    }

    /// pidfd_send_signal(2) has no wrapper glibc's module map exposes; its number is 424 on
    /// every architecture (system calls from 403 on share one table).
    static let pidfdSendSignal = 424

    // MARK: /proc

    /// When a process started, in clock ticks since boot: field 22 of /proc/PID/stat (proc(5)).
    /// A PID names another process once the first one ended; the pair (PID, start time) does not.
    public static func startTime(of pid: pid_t) throws(Errno) -> UInt64 {
        let fields = try statFields(of: pid)
        // fields[0] is field 3 (state), so field N is fields[N - 3].
        guard fields.count > 19, let ticks = UInt64(fields[19]) else { throw Errno(rawValue: EINVAL) }
        return ticks
    }

    /// CPU time the process has used so far, all threads, user and system, in clock ticks
    /// (`clockTicksPerSecond`): fields 14 and 15 of /proc/PID/stat.
    public static func cpuTicks(of pid: pid_t) throws(Errno) -> UInt64 {
        let fields = try statFields(of: pid)
        guard fields.count > 12, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else { throw Errno(rawValue: EINVAL) }
        return user + system
    }

    /// The same in seconds.
    public static func cpuSeconds(of pid: pid_t) throws(Errno) -> Double {
        Double(try cpuTicks(of: pid)) / Double(clockTicksPerSecond)
    }

    /// The unit of /proc's process times: sysconf(_SC_CLK_TCK), 100 on Linux.
    public static let clockTicksPerSecond = UInt64(sysconf(CInt(_SC_CLK_TCK)))

    /// The parent's PID: field 4 of /proc/PID/stat.
    public static func parentPid(of pid: pid_t) throws(Errno) -> pid_t {
        let fields = try statFields(of: pid)
        guard fields.count > 1, let parent = pid_t(fields[1]) else { throw Errno(rawValue: EINVAL) }
        return parent
    }

    /// The fields of /proc/PID/stat after the command name, from field 3 (state) on. The name
    /// is in parentheses and may itself hold spaces and ')', so the split starts after the last ')'.
    private static func statFields(of pid: pid_t) throws(Errno) -> [Substring] {
        let bytes = try FileIO.readFile("/proc/\(pid)/stat", limit: 4096)
        let text = String(decoding: bytes, as: UTF8.self)
        guard let close = text.lastIndex(of: ")") else { throw Errno(rawValue: EINVAL) }
        return text[text.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
    }
}
