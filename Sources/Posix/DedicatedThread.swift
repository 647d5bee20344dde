#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys

/// A thread for work that blocks in the kernel: an epoll loop, a read(2) of a terminal, a
/// write(2) to a slow pipe, sigwait(3). Such work never runs inside a Task (it would hold one
/// of the few threads Swift's cooperative pool has). The host starts every thread it owns
/// here, so a thread is always named and detached the same way. C: pthread_create(3)
public enum DedicatedThread {
    /// Starts `body` on a new detached thread named `name` (at most 15 bytes show in ps/top).
    public static func start(named name: String, _ body: @escaping @Sendable () -> Void) {
        let start = Unmanaged.passRetained(ThreadStart(name: name, body: body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, threadEntry, start)
        // EAGAIN (out of threads) is the only failure with valid arguments; nothing works then.
        precondition(result == 0, "pthread_create failed: \(Errno(rawValue: result))")
        pthread_detach(thread)
    }

    /// What pthread_setname_np(3) does on Linux (Glibc's module map leaves it out): write the
    /// name to the thread's comm file. Best effort; a name is only for people.
    fileprivate static func nameThisThread(_ name: String) {
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        let bytes = Array(name.utf8.prefix(15))
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        _ = Glibc.close(fd)
    }
}

/// What a new thread runs, handed through pthread_create's one pointer.
private final class ThreadStart: Sendable {
    let name: String
    let body: @Sendable () -> Void
    init(name: String, body: @escaping @Sendable () -> Void) {
        self.name = name
        self.body = body
    }
}

private func threadEntry(_ raw: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let start = Unmanaged<ThreadStart>.fromOpaque(raw!).takeRetainedValue()
    DedicatedThread.nameThisThread(start.name)
    start.body()
    return nil
}

/// Puts a dedicated thread to sleep until another thread (or a Task) wakes it; wakes before
/// the sleep are not lost. An eventfd(2) read in blocking mode; `descriptor` also serves as
/// "stop" in a poll(2) beside another descriptor.
public final class WakeGate: Sendable {
    private let fd: CInt

    public init() throws(Errno) {
        fd = try retrying { CSys.eventfd(0, CInt(EFD_CLOEXEC)) }
    }

    deinit { _ = Glibc.close(fd) }

    /// Readable while a wake is pending.
    public var descriptor: CInt { fd }

    /// Wakes the sleeper (or the next `sleep`). Safe from any thread or task.
    public func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(fd, &one, 8)
    }

    /// Blocks until woken; consumes every wake so far.
    public func sleep() {
        var count: UInt64 = 0
        while Glibc.read(fd, &count, 8) < 0 && errno == EINTR {}
    }

    /// Blocks until woken or until `timeout` passed; consumes every wake so far. Returns
    /// whether it was woken. One sleeper per gate: only then is the eventfd still readable
    /// when poll(2) said so.
    @discardableResult
    public func sleep(timeout: Duration) -> Bool {
        var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let deadline = Clock.monotonicNs() &+ timeout.nanoseconds
        while true {
            let now = Clock.monotonicNs()
            guard now < deadline else { return false }
            // Rounded up, so a wait shorter than a millisecond is not a busy poll(0).
            let ms = CInt(clamping: (deadline - now + 999_999) / 1_000_000)
            let n = poll(&ready, 1, ms)
            if n > 0 { break }
            if n < 0 && errno != EINTR { return false }
        }
        sleep()
        return true
    }
}
