/// A FIFO of bytes in one growable buffer: appended at the end, consumed from the front.
///
/// The buffer is raw memory, never zero-filled, and a growth copies only the unconsumed bytes
/// into the new one: a page of it costs memory only once bytes are written there. (An
/// `[UInt8]` zero-filled each new buffer whole and copied the old one whole, so a queue that
/// doubled to 1 MiB held its old buffer and every page of the new one at once: the agent's
/// link queue did.) Reading 64 KiB from a pipe into the queue costs the read and nothing else.
///
/// Consumed space is reclaimed by moving the unconsumed bytes to the front, but only when
/// that moves no more bytes than it frees, which keeps appends amortized O(1) however the
/// reader and writer interleave.
///
/// A value type: copies share the buffer until one of them changes (copy on write).
public struct ByteQueue: @unchecked Sendable {
    /// The buffer; freed with the last queue that holds it.
    private final class Storage {
        let base: UnsafeMutableRawPointer?
        let capacity: Int

        init() {
            base = nil
            capacity = 0
        }

        /// A buffer of `capacity` bytes starting with `count` bytes copied from `from`.
        init(copying from: UnsafeRawPointer?, count: Int, capacity: Int) {
            self.capacity = capacity
            base = capacity > 0 ? UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16) : nil
            if count > 0, let from, let base { base.copyMemory(from: from, byteCount: count) }
        }

        deinit { base?.deallocate() }
    }

    private var storage = Storage()
    private var start = 0
    private var end = 0

    public init() {}

    /// Bytes appended and not yet consumed.
    public var count: Int { end - start }
    public var isEmpty: Bool { start == end }
    /// Bytes of storage held, used or not.
    public var capacity: Int { storage.capacity }

    /// Moves the unconsumed bytes into a new buffer of `capacity` bytes, this queue's own.
    private mutating func reallocate(capacity: Int) {
        storage = Storage(copying: storage.base.map { UnsafeRawPointer($0 + start) }, count: count, capacity: capacity)
        end = count
        start = 0
    }

    /// A buffer of this queue's own before it is written (copy on write).
    private mutating func makeUnique() {
        if !isKnownUniquelyReferenced(&storage) { reallocate(capacity: storage.capacity) }
    }

    /// Makes room for `needed` more bytes after `end`, in a buffer of this queue's own.
    private mutating func reserve(_ needed: Int) {
        guard isKnownUniquelyReferenced(&storage) else {
            // Shared with a copy: one new buffer, with the room already in it.
            reallocate(capacity: max(storage.capacity, count + needed, 4096))
            return
        }
        if storage.capacity - end >= needed { return }
        if start > 0 && start >= count {
            let live = count
            if live > 0 { storage.base!.copyMemory(from: storage.base! + start, byteCount: live) }
            start = 0
            end = live
            if storage.capacity - end >= needed { return }
        }
        reallocate(capacity: max(storage.capacity * 2, count + needed, 4096))
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(bytes.count)
        (storage.base! + end).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        end += bytes.count
    }

    public mutating func append(_ byte: UInt8) {
        reserve(1)
        storage.base!.storeBytes(of: byte, toByteOffset: end, as: UInt8.self)
        end += 1
    }

    public mutating func append(contentsOf bytes: some Sequence<UInt8>) {
        var bytes = Array(bytes)
        bytes.withUnsafeMutableBytes { append(UnsafeRawBufferPointer($0)) }
    }

    /// Lets `body` write up to `capacity` bytes at the end (read(2) straight into the queue);
    /// keeps as many as it returns (a negative or zero result keeps none). Returns that result.
    @discardableResult
    public mutating func append(capacity: Int, _ body: (UnsafeMutableRawBufferPointer) -> Int) -> Int {
        reserve(capacity)
        let produced = body(UnsafeMutableRawBufferPointer(start: storage.base.map { $0 + end }, count: capacity))
        if produced > 0 { end += min(produced, capacity) }
        return produced
    }

    /// Drops `n` bytes from the front.
    public mutating func consume(_ n: Int) {
        precondition(n >= 0 && n <= count, "consumed more than the queue holds")
        start += n
        if start == end {
            start = 0
            end = 0
        }
    }

    /// Drops the newest `n` bytes (undoing an append).
    public mutating func truncate(droppingLast n: Int) {
        precondition(n >= 0 && n <= count, "truncated more than the queue holds")
        end -= n
    }

    public mutating func removeAll() {
        start = 0
        end = 0
    }

    /// Returns the storage to the allocator when the queue is empty and holds more than
    /// `limit` bytes, so one burst does not pin memory for a connection's lifetime.
    public mutating func releaseStorageIfEmpty(above limit: Int) {
        if isEmpty && storage.capacity > limit { storage = Storage() }
    }

    /// The unconsumed bytes, in place.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: storage.base.map { $0 + start }, count: count))
    }

    /// Mutable access to the unconsumed bytes (to patch a header already appended).
    public mutating func withMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        makeUnique()
        return try body(UnsafeMutableRawBufferPointer(start: storage.base.map { $0 + start }, count: count))
    }

    /// Copies `n` bytes starting `offset` bytes after the front.
    public func copyBytes(at offset: Int, count n: Int) -> [UInt8] {
        precondition(offset >= 0 && n >= 0 && offset + n <= count, "copied beyond the queue")
        guard n > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: storage.base! + start + offset, count: n))
    }
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` that keeps a typed error (the standard one is `rethrows`, which
    /// widens a typed error to `any Error`).
    @inlinable
    public func withBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = withUnsafeBytes { raw in Result { () throws(E) -> R in try body(raw) } }
        return try result.get()
    }
}
