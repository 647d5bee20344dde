#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization
import TetherPosix

/// Answers one `logs` request: reads exec.log's files oldest first (optionally keeping only
/// one session's lines), then, when following, waits for the writer and reads what it adds,
/// across rotations, like `tail -F` but woken by the writer instead of polling.
///
/// Runs on its own thread: file reads never touch the relay's loop. It sleeps on its own
/// `WakeGate`, woken by the writer (a line, a rotation, the close), by `grant` and by `cancel`;
/// every wait re-checks what it waits for, so a wake meant for one wait never starves another. It sends no more than the
/// client's window allows (`grant` adds to it as the client acks), so a client that stops
/// reading holds one 64 KiB read and nothing else.
///
/// Owns: its thread and the log file descriptors it opened (closed before it ends). Ends
/// after the history (no follow), on `cancel()`, or when the log closes; then it delivers
/// `.end` exactly once.
final class LogFollower: @unchecked Sendable {
    enum Output: Sendable {
        case bytes([UInt8])
        case end
    }

    private let log: ExecLog
    private let session: UInt32?
    private let follow: Bool
    private let deliver: @Sendable (Output) -> Void
    private let credit: Mutex<Int>
    private let gate: WakeGate
    private let cancelled = Atomic<Bool>(false)
    /// Bytes of an incomplete line carried between reads (only when filtering).
    private var partialLine: [UInt8] = []

    init(log: ExecLog, session: UInt32?, follow: Bool, initialCredit: Int,
         deliver: @escaping @Sendable (Output) -> Void) throws(Errno) {
        gate = try WakeGate()
        credit = Mutex(initialCredit)
        self.log = log
        self.session = session
        self.follow = follow
        self.deliver = deliver
    }

    func start() {
        DedicatedThread.start(named: "tether-logs") { [self] in
            // Watching before the first look at the log: no line written after it goes unseen.
            log.watch(self, gate: gate)
            run()
            log.unwatch(self)
            deliver(.end)
        }
    }

    /// The client consumed `bytes` more.
    func grant(_ bytes: Int) {
        credit.withLock { $0 += bytes }
        gate.wake()
    }

    func cancel() {
        cancelled.store(true, ordering: .relaxed)
        gate.wake()
    }

    private var isCancelled: Bool { cancelled.load(ordering: .relaxed) }

    private func run() {
        let files = log.configuration.files
        let (opened, start) = log.snapshot { _ in files - 1 }
        var older = opened
        var rotations = start.rotations
        var seen = start.writtenBytes
        guard !older.isEmpty else { return }
        var current = older.removeLast()
        defer { _ = Glibc.close(current) }
        for fd in older {
            let more = pump(fd)
            _ = Glibc.close(fd)
            if !more { return }
        }
        guard pump(current), follow else { return }

        while true {
            // Our file is generation (rotations now - rotations) once the writer rotated: the
            // ones after it are opened with the look at its progress.
            let (opened, now) = log.snapshot { [rotations] now in
                now.rotations == rotations ? nil : min(now.rotations - rotations, files) - 1
            }
            var newer = opened
            if !isCancelled && !now.closed && now.writtenBytes == seen && now.rotations == rotations {
                gate.sleep()
                continue
            }
            seen = now.writtenBytes
            let nowRotations = now.rotations
            let closed = now.closed
            if isCancelled {
                for fd in newer { _ = Glibc.close(fd) }
                return
            }
            guard pump(current) else {
                for fd in newer { _ = Glibc.close(fd) }
                return
            }
            if nowRotations != rotations {
                rotations = nowRotations
                if let last = newer.popLast() {
                    _ = Glibc.close(current)
                    current = last
                    for fd in newer {
                        let more = pump(fd)
                        _ = Glibc.close(fd)
                        if !more { return }
                    }
                    guard pump(current) else { return }
                }
            }
            if closed { return }
        }
    }

    /// Reads `fd` to its current end and sends what matches. False once cancelled.
    private func pump(_ fd: CInt) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while !isCancelled {
            let n = chunk.withUnsafeMutableBytes { raw in
                while true {
                    let n = Glibc.read(fd, raw.baseAddress, raw.count)
                    if n < 0 && errno == EINTR { continue }
                    return n
                }
            }
            if n <= 0 { return true }
            if let session {
                partialLine += chunk[0..<n]
                var matched: [UInt8] = []
                var start = partialLine.startIndex
                while let newline = partialLine[start...].firstIndex(of: UInt8(ascii: "\n")) {
                    let line = partialLine[start...newline]
                    if Self.session(of: line) == session { matched += line }
                    start = newline + 1
                }
                partialLine.removeFirst(start - partialLine.startIndex)
                if !matched.isEmpty && !send(matched[...]) { return false }
            } else if !send(chunk[0..<n]) {
                return false
            }
        }
        return false
    }

    /// Sends within the client's window, waiting for acks. False once cancelled.
    private func send(_ bytes: ArraySlice<UInt8>) -> Bool {
        var rest = bytes
        while !rest.isEmpty {
            var take = 0
            while !isCancelled {
                take = credit.withLock { credit in
                    let take = min(credit, rest.count, 64 << 10)
                    credit -= max(take, 0)
                    return take
                }
                if take > 0 { break }
                gate.sleep()
            }
            if isCancelled { return false }
            deliver(.bytes(Array(rest.prefix(take))))
            rest = rest.dropFirst(take)
        }
        return true
    }

    /// The `session` value of one exec.log line (`{"time":"...","session":N,...`).
    static func session<C: Collection<UInt8>>(of line: C) -> UInt32? {
        let key = Array(#","session":"#.utf8)
        let bytes = Array(line.prefix(96))
        guard bytes.count > key.count else { return nil }
        for start in 0...(bytes.count - key.count) where bytes[start..<(start + key.count)].elementsEqual(key) {
            var value: UInt64 = 0
            var i = start + key.count
            var digits = 0
            while i < bytes.count, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9"), digits < 10 {
                value = value * 10 + UInt64(bytes[i] - UInt8(ascii: "0"))
                i += 1
                digits += 1
            }
            return digits > 0 ? UInt32(exactly: value) : nil
        }
        return nil
    }
}
