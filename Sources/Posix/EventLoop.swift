#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys

/// Single-threaded readiness loop over epoll(7), with timers on one timerfd(2) and a
/// cross-thread wake-up on one eventfd(2).
///
/// Each watched descriptor is a registration with its own id, which epoll hands back with
/// every event (`epoll_data` holds the descriptor and the id). A handler may unwatch and close
/// a descriptor while events for it are still in the batch `epoll_wait` returned; if the
/// number is reused and watched again meanwhile, those events carry the old id and are
/// dropped instead of reaching the new handler.
///
/// Owns: the epoll fd, the timerfd and the eventfd (closed on deinit). Everything it calls
/// runs on the thread that calls `run()`; only `waker` may be used from other threads.
/// Ends when a handler sets `stopping`.
public final class EventLoop {
    public typealias Handler = (_ events: UInt32) -> Void

    private struct Registration {
        let id: UInt32
        let handler: Handler
    }

    private let epfd: CInt
    private let timerfd: CInt
    private let eventfd: CInt
    private var registrations: [CInt: Registration] = [:]
    /// The id of the next registration. Ids wrap after 2^32 registrations, long after any event
    /// of a batch could still refer to an old one; 0 marks the loop's own timerfd and eventfd.
    private var nextRegistrationID: UInt32 = 1
    private var timers = TimerHeap()
    private var wakeHandler: (() -> Void)?
    /// Work queued to run after the current batch of events (see `soon`).
    private var deferred: [() -> Void] = []
    /// Work queued to run once the descriptors ready now had their turn (see `afterReadyEvents`).
    private var yielded: [() -> Void] = []
    public var stopping = false

    public init() throws(Errno) {
        epfd = try retrying { epoll_create1(CInt(EPOLL_CLOEXEC)) }
        timerfd = try retrying { timerfd_create(CLOCK_MONOTONIC, CInt(TFD_CLOEXEC | TFD_NONBLOCK)) }
        eventfd = try retrying { CSys.eventfd(0, CInt(EFD_CLOEXEC | EFD_NONBLOCK)) }
        try control(EPOLL_CTL_ADD, timerfd, events: UInt32(EPOLLIN.rawValue), id: 0)
        try control(EPOLL_CTL_ADD, eventfd, events: UInt32(EPOLLIN.rawValue), id: 0)
    }

    deinit {
        _ = Glibc.close(eventfd)
        _ = Glibc.close(timerfd)
        _ = Glibc.close(epfd)
    }

    /// EPOLL_CTL_ADD or EPOLL_CTL_MOD with the descriptor and its registration id as data.
    private func control(_ operation: CInt, _ fd: CInt, events: UInt32, id: UInt32) throws(Errno) {
        var event = epoll_event()
        event.events = events
        event.data.u64 = UInt64(id) << 32 | UInt64(UInt32(bitPattern: fd))
        _ = try retrying { epoll_ctl(epfd, operation, fd, &event) }
    }

    // MARK: descriptors

    public static let readable = UInt32(EPOLLIN.rawValue)
    public static let writable = UInt32(EPOLLOUT.rawValue)
    /// Peer closed its writing half (stream sockets); reported with EPOLLIN.
    public static let peerClosed = UInt32(EPOLLRDHUP.rawValue)
    public static let hangUp = UInt32(EPOLLHUP.rawValue)
    public static let error = UInt32(EPOLLERR.rawValue)

    /// Stores the handler first, then arms epoll, so no event arrives unhandled. Throws what
    /// epoll_ctl(2) said (EEXIST for a descriptor watched already, whose handler stays; EBADF;
    /// EPERM for a regular file; ENOMEM, ENOSPC at the max_user_watches limit).
    public func watch(_ fd: CInt, events: UInt32, _ handler: @escaping Handler) throws(Errno) {
        guard registrations[fd] == nil else { throw Errno(rawValue: EEXIST) }
        let id = nextRegistrationID
        nextRegistrationID = nextRegistrationID == .max ? 1 : nextRegistrationID + 1
        registrations[fd] = Registration(id: id, handler: handler)
        do { try control(EPOLL_CTL_ADD, fd, events: events, id: id) } catch {
            registrations[fd] = nil
            throw error
        }
    }

    /// Changes the events a watched descriptor is interested in (0 pauses it; EPOLLHUP and
    /// EPOLLERR are still reported, as epoll always does). Throws ENOENT for a descriptor
    /// that is not watched, and what epoll_ctl(2) said otherwise.
    public func modify(_ fd: CInt, events: UInt32) throws(Errno) {
        guard let registration = registrations[fd] else { throw Errno(rawValue: ENOENT) }
        try control(EPOLL_CTL_MOD, fd, events: events, id: registration.id)
    }

    /// Stops watching; call before close(2). Events for `fd` still queued in the current batch
    /// are dropped from here on, even if the number is watched again.
    ///
    /// The registration is forgotten whatever EPOLL_CTL_DEL says. It fails only when the
    /// descriptor was closed already (EBADF), which took it out of the epoll set, unless a
    /// duplicate of it lives on (a child kept it): then its events keep arriving and are
    /// dropped as stale. The failure is returned for the caller to report.
    @discardableResult
    public func unwatch(_ fd: CInt) -> Errno? {
        guard registrations.removeValue(forKey: fd) != nil else { return nil }
        do { _ = try retrying { epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nil) } } catch { return error }
        return nil
    }

    public func isWatching(_ fd: CInt) -> Bool { registrations[fd] != nil }

    // MARK: timers

    /// Monotonic time in nanoseconds (CLOCK_MONOTONIC).
    public static func now() -> UInt64 { Clock.monotonicNs() }

    /// Runs `handler` once, `delay` from now. Returns an id for `cancel`.
    @discardableResult
    public func schedule(after delay: Duration, _ handler: @escaping () -> Void) -> TimerID {
        schedule(atNs: EventLoop.now() &+ delay.nanoseconds, handler)
    }

    @discardableResult
    public func schedule(atNs deadline: UInt64, _ handler: @escaping () -> Void) -> TimerID {
        let (id, becameEarliest) = timers.insert(deadline: deadline, handler)
        if becameEarliest { armTimerfd() }
        return id
    }

    public func cancel(_ id: TimerID) { timers.cancel(id) }

    private func armTimerfd() {
        var spec = itimerspec()
        if let next = timers.earliestDeadline {
            let ns = max(next, 1)  // 0 would disarm
            spec.it_value.tv_sec = Int(ns / 1_000_000_000)
            spec.it_value.tv_nsec = Int(ns % 1_000_000_000)
        }
        _ = timerfd_settime(timerfd, CInt(TFD_TIMER_ABSTIME), &spec, nil)
    }

    private func fireDueTimers() {
        var expirations: UInt64 = 0
        _ = Glibc.read(timerfd, &expirations, 8)
        let now = EventLoop.now()
        while let handler = timers.popDue(now: now) { handler() }
        armTimerfd()
    }

    // MARK: cross-thread wake-up and deferred work

    /// A handle other threads use to wake the loop; `onWake` then runs on the loop's thread.
    public struct Waker: Sendable {
        let fd: CInt
        public func wake() {
            var one: UInt64 = 1
            _ = Glibc.write(fd, &one, 8)
        }
    }

    public var waker: Waker { Waker(fd: eventfd) }

    /// What to run on the loop's thread after any `Waker.wake()` (coalesced).
    public func onWake(_ handler: @escaping () -> Void) { wakeHandler = handler }

    /// Runs `work` after the handlers of the current batch of events, before waiting again.
    public func soon(_ work: @escaping () -> Void) { deferred.append(work) }

    /// Runs `work` after the loop has polled (without blocking) and dispatched every descriptor
    /// that is ready by then. Unlike `soon`, queuing it again from inside `work` does not run it
    /// again before anything else: this is how a busy peer yields to the others.
    public func afterReadyEvents(_ work: @escaping () -> Void) { yielded.append(work) }

    // MARK: running

    /// Waits for events and dispatches them until `stopping` is set.
    public func run() throws(Errno) {
        var ready = [epoll_event](repeating: epoll_event(), count: 128)
        while !stopping {
            runDeferred()
            if stopping { break }
            let timeout: CInt = yielded.isEmpty ? -1 : 0
            let n = try ready.withUnsafeMutableBufferPointer { (buffer) throws(Errno) -> CInt in
                try retrying { epoll_wait(epfd, buffer.baseAddress, CInt(buffer.count), timeout) }
            }
            for i in 0..<Int(n) {
                let data = ready[i].data.u64
                let fd = CInt(bitPattern: UInt32(truncatingIfNeeded: data))
                let id = UInt32(truncatingIfNeeded: data >> 32)
                let events = ready[i].events
                if id == 0 && fd == timerfd {
                    fireDueTimers()
                } else if id == 0 && fd == eventfd {
                    var count: UInt64 = 0
                    _ = Glibc.read(eventfd, &count, 8)
                    wakeHandler?()
                } else if let registration = registrations[fd], registration.id == id {
                    registration.handler(events)
                }
                // Else stale: a handler earlier in this batch unwatched this fd (and perhaps
                // watched a new descriptor under the same number).
            }
            if !yielded.isEmpty {
                deferred.append(contentsOf: yielded)
                yielded.removeAll()
            }
        }
    }

    private func runDeferred() {
        while !deferred.isEmpty {
            let work = deferred
            deferred.removeAll()
            for item in work { item() }
        }
    }
}

/// Identifies a scheduled timer.
public struct TimerID: Hashable, Sendable {
    let value: UInt64
}

/// A binary min-heap of deadlines; cancelled timers are dropped lazily when they surface.
struct TimerHeap {
    private var heap: [(deadline: UInt64, id: UInt64)] = []
    private var handlers: [UInt64: () -> Void] = [:]
    private var nextID: UInt64 = 1

    var earliestDeadline: UInt64? {
        mutating get {
            dropCancelled()
            return heap.first?.deadline
        }
    }

    mutating func insert(deadline: UInt64, _ handler: @escaping () -> Void) -> (TimerID, becameEarliest: Bool) {
        let id = nextID
        nextID += 1
        handlers[id] = handler
        heap.append((deadline, id))
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if heap[parent].deadline <= heap[child].deadline { break }
            heap.swapAt(parent, child)
            child = parent
        }
        return (TimerID(value: id), child == 0)
    }

    mutating func cancel(_ id: TimerID) { handlers[id.value] = nil }

    mutating func popDue(now: UInt64) -> (() -> Void)? {
        while let top = heap.first, top.deadline <= now {
            removeTop()
            if let handler = handlers.removeValue(forKey: top.id) { return handler }
        }
        return nil
    }

    private mutating func dropCancelled() {
        while let top = heap.first, handlers[top.id] == nil { removeTop() }
    }

    private mutating func removeTop() {
        let last = heap.removeLast()
        guard !heap.isEmpty else { return }
        heap[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < heap.count && heap[left].deadline < heap[smallest].deadline { smallest = left }
            if right < heap.count && heap[right].deadline < heap[smallest].deadline { smallest = right }
            if smallest == parent { break }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
