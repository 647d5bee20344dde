#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization
import TetherPosix
import TetherProtocol

/// exec.log: JSON Lines (format in `LogLineEncoder`), written off the relay's hot path.
///
/// The relay's loop thread calls `record`, which only appends to a bounded in-memory queue
/// under a lock. One writer thread formats and writes the queue, and rotates the file:
/// `exec.log` -> `exec.log.1` -> ... -> `exec.log.<files-1>`, each at most `maxFileBytes`
/// (10 MiB x 3 files by default). When the queue is full (`queueBytes`, 16 MiB by default,
/// reached only when the disk is slower than the sessions' output), new entries are dropped,
/// never waited for, and the next line written is a `logDropped` marker with how many entries
/// and data bytes were lost. The relay never blocks on the log.
///
/// The files are opened as `PrivateFiles` does: never through a symbolic link at their names
/// (O_NOFOLLOW: ELOOP), only regular files of the relay's user with one name, and a rotation
/// creates the new live file fresh (O_EXCL), so a link planted in the log's directory cannot
/// turn guest output into a write to some other file, or a `logs` request into a read of one.
/// A directory it creates is 0700.
///
/// Owns: the open exec.log descriptor and the writer thread. Ends with `close()`, which
/// writes what is queued and waits for the thread. Readers (`LogFollower`) open the files
/// themselves; each sleeps on its own `WakeGate`, which the writer wakes after every line and
/// rotation (`watch`).
public final class ExecLog: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var directory: String
        public var fileName = "exec.log"
        /// A file is rotated before a line would take it past this size.
        public var maxFileBytes = 10 << 20
        /// Files kept, the live one included.
        public var files = 3
        /// Bound of the writer's queue (data bytes plus a fixed cost per entry).
        public var queueBytes = 16 << 20
        /// Whether what clients send to a session's stdin is logged too. Off by default: a
        /// terminal session's stdin is keystrokes, passwords typed at a prompt included.
        public var recordsStdin = false

        public init(directory: String) { self.directory = directory }

        public var path: String { directory + "/" + fileName }
        /// `exec.log` for 0, `exec.log.N` for N.
        public func path(generation: Int) -> String { generation == 0 ? path : path + ".\(generation)" }
    }

    public let configuration: Configuration

    private struct Entry {
        var timeNs: UInt64
        var session: UInt32
        var event: LogEvent
    }
    private static let entryOverhead = 64

    /// What the relay's thread hands the writer thread.
    private struct Queue {
        var entries: [Entry] = []
        var bytes = 0
        /// Entries (and their data bytes) turned away while the queue was full.
        var droppedEntries: UInt64 = 0
        var droppedBytes: UInt64 = 0
        var stopping = false

        /// Says what was dropped, in the place of the dropped entries.
        mutating func reportDropped(timeNs: UInt64) {
            guard droppedEntries > 0 else { return }
            entries.append(Entry(timeNs: timeNs, session: 0, event: .logDropped(entries: droppedEntries, bytes: droppedBytes)))
            droppedEntries = 0
            droppedBytes = 0
        }
    }

    private let queue = Mutex(Queue())
    /// The writer sleeps here while the queue is empty.
    private let writerGate: WakeGate

    /// What readers see of the writer's progress; changed only by the writer thread.
    struct Progress {
        /// Bytes written to the live file since the log opened (all generations).
        var writtenBytes: UInt64 = 0
        /// How many times the live file was rotated.
        var rotations = 0
        /// The writer has stopped: nothing more will be written.
        var closed = false
    }
    /// Held across a rotation's renames, and by a reader opening generations, so that no
    /// rotation happens between a reader's opens.
    private let progress = Mutex(Progress())
    /// The gates of readers waiting for progress, by reader.
    private let watchers = Mutex([ObjectIdentifier: WakeGate]())

    /// Whether `start` ran (the relay's thread only): `close` waits for a writer only then.
    private var started = false
    // Writer thread only (and init).
    private var fd: CInt
    private var fileBytes: Int
    private var encoder = LogLineEncoder()
    private var writeFailed = false
    private let diagnostics: @Sendable (String) -> Void
    /// `close` sleeps here until the writer has written everything and closed the file.
    private let finishedGate: WakeGate

    /// Opens (creating it and the directory if needed) the live file for appending. A file that
    /// is not safe to append to (see the type's comment) throws the errno that stands for it
    /// (ELOOP for a link, EPERM for another owner, ...) after `diagnostics` got the details.
    public init(_ configuration: Configuration, diagnostics: @escaping @Sendable (String) -> Void) throws(Errno) {
        precondition(configuration.files >= 1 && configuration.maxFileBytes > 0)
        self.configuration = configuration
        self.diagnostics = diagnostics
        writerGate = try WakeGate()
        finishedGate = try WakeGate()
        if mkdir(configuration.directory, 0o700) != 0 && errno != EEXIST { throw .current }
        do {
            fd = try PrivateFiles.openForAppend(configuration.path, mode: 0o640).release()
        } catch {
            if case .failed = error.problem {} else { diagnostics("exec.log: \(error.message)") }
            throw error.errno
        }
        var st = stat()
        fileBytes = fstat(fd, &st) == 0 ? Int(st.st_size) : 0
    }

    deinit {
        if fd >= 0 { _ = Glibc.close(fd) }
    }

    /// Starts the writer thread.
    public func start() {
        started = true
        DedicatedThread.start(named: "tether-exec-log") { [self] in writerLoop() }
    }

    /// Queues an entry; never blocks beyond a short lock. Called from the relay's thread.
    public func record(session: UInt32, _ event: LogEvent, timeNs: UInt64 = Clock.realtimeNs()) {
        let cost = event.payloadBytes + Self.entryOverhead
        let first = queue.withLock { queue -> Bool in
            guard !queue.stopping else { return false }
            if queue.bytes + cost > configuration.queueBytes {
                queue.droppedEntries += 1
                if case .data(_, let bytes) = event { queue.droppedBytes += UInt64(bytes.count) }
                return false
            }
            queue.reportDropped(timeNs: timeNs)
            queue.entries.append(Entry(timeNs: timeNs, session: session, event: event))
            queue.bytes += cost
            return queue.entries.count == 1
        }
        if first { writerGate.wake() }
    }

    /// Writes everything queued, stops the writer and closes the file.
    public func close() {
        queue.withLock { $0.stopping = true }
        writerGate.wake()
        guard started else { return }
        while !progress.withLock({ $0.closed }) { finishedGate.sleep() }
    }

    // MARK: writer thread

    private func writerLoop() {
        var out: [UInt8] = []
        while true {
            let (batch, done, idle) = queue.withLock { queue -> ([Entry], Bool, Bool) in
                // Dropped while full and nothing came after: say so now.
                queue.reportDropped(timeNs: Clock.realtimeNs())
                let batch = queue.entries
                queue.entries.removeAll(keepingCapacity: true)
                queue.bytes = 0
                return (batch, queue.stopping, batch.isEmpty && !queue.stopping)
            }
            if idle {
                writerGate.sleep()
                continue
            }
            for entry in batch {
                out.removeAll(keepingCapacity: true)
                encoder.encode(timeNs: entry.timeNs, session: entry.session, event: entry.event, into: &out)
                write(line: out)
            }
            if done { break }
        }
        progress.withLock { progress in
            _ = Glibc.close(fd)
            fd = -1
            progress.closed = true
        }
        wakeWatchers()
        finishedGate.wake()
    }

    private func write(line: [UInt8]) {
        if fileBytes > 0 && fileBytes + line.count > configuration.maxFileBytes { rotate() }
        guard fd >= 0 else { return }
        do {
            try FileIO.writeAll(fd, line)
            fileBytes += line.count
            if writeFailed {
                writeFailed = false
                diagnostics("exec.log: writing works again")
            }
        } catch {
            // A full disk must not stop the relay: report once, keep trying with later lines.
            if !writeFailed { diagnostics("exec.log: write failed: \(error); lines are being lost") }
            writeFailed = true
        }
        progress.withLock { $0.writtenBytes += UInt64(line.count) }
        wakeWatchers()
    }

    /// exec.log.N-1 is replaced by exec.log.N-2, ..., exec.log.1 by exec.log; a new exec.log.
    private func rotate() {
        defer { wakeWatchers() }
        progress.withLock { progress in
            _ = Glibc.close(fd)
            fd = -1
            // rename(2) moves names and never follows a link at either of them.
            for generation in stride(from: configuration.files - 1, through: 1, by: -1) {
                _ = Glibc.rename(configuration.path(generation: generation - 1), configuration.path(generation: generation))
            }
            // The live name is free now unless something was planted there meanwhile: remove
            // whatever it is, and create the new file fresh.
            _ = unlink(configuration.path)
            progress.rotations += 1
            fileBytes = 0
            do throws(UnsafePathError) {
                fd = try PrivateFiles.createNew(configuration.path, mode: 0o640).release()
            } catch {
                diagnostics("exec.log: cannot create \(configuration.path) after rotation: \(error.message)")
            }
        }
    }

    private func wakeWatchers() {
        for gate in watchers.withLock({ Array($0.values) }) { gate.wake() }
    }

    // MARK: for readers

    /// Wakes `gate` after every line written, every rotation and the close, until `unwatch`.
    func watch(_ reader: AnyObject, gate: WakeGate) {
        watchers.withLock { $0[ObjectIdentifier(reader)] = gate }
    }

    func unwatch(_ reader: AnyObject) {
        _ = watchers.withLock { $0.removeValue(forKey: ObjectIdentifier(reader)) }
    }

    /// The writer's progress now, and the generations `oldest` picks from it (oldest first, as
    /// many as exist; none for nil), opened under the same lock: no rotation can happen
    /// between reading the progress and the opens.
    func snapshot(opening oldest: (Progress) -> Int?) -> (fds: [CInt], progress: Progress) {
        progress.withLock { progress in
            var fds: [CInt] = []
            if let oldest = oldest(progress) {
                for generation in stride(from: oldest, through: 0, by: -1) {
                    if let file = try? PrivateFiles.openForReading(configuration.path(generation: generation)) { fds.append(file.release()) }
                }
            }
            return (fds, progress)
        }
    }
}
