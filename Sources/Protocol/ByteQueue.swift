/// A FIFO of bytes in one growable buffer: appended at the end, consumed from the front.
///
/// The storage is zero-filled only when it grows, never per append, so reading 64 KiB from a
/// pipe into it costs the read and nothing else. Consumed space is reclaimed by moving the
/// unconsumed bytes to the front, but only when that moves no more bytes than it frees, which
/// keeps appends amortized O(1) however the reader and writer interleave.
public struct ByteQueue: Sendable {
    private var storage: [UInt8] = []
    private var start = 0
    private var end = 0

    public init() {}

    /// Bytes appended and not yet consumed.
    public var count: Int { end - start }
    public var isEmpty: Bool { start == end }
    /// Bytes of storage held, used or not.
    public var capacity: Int { storage.count }

    /// Makes room for `needed` more bytes after `end`.
    private mutating func reserve(_ needed: Int) {
        if storage.count - end >= needed { return }
        if start > 0 && start >= count {
            let live = count
            storage.withUnsafeMutableBytes { raw in
                raw.baseAddress!.copyMemory(from: raw.baseAddress! + start, byteCount: live)
            }
            start = 0
            end = live
            if storage.count - end >= needed { return }
        }
        let target = max(storage.count * 2, end + needed, 4096)
        // Built in one pass rather than `append(contentsOf: repeatElement(0, ...))`, which an
        // unoptimized (debug) build runs element by element through generic code.
        let old = storage
        storage = [UInt8](unsafeUninitializedCapacity: target) { buffer, initialized in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            old.withUnsafeBytes { raw.copyMemory(from: $0) }
            (raw.baseAddress! + old.count).initializeMemory(as: UInt8.self, repeating: 0, count: target - old.count)
            initialized = target
        }
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(bytes.count)
        storage.withUnsafeMutableBytes { raw in
            (raw.baseAddress! + end).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        }
        end += bytes.count
    }

    public mutating func append(_ byte: UInt8) {
        reserve(1)
        storage[end] = byte
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
        let produced = storage.withUnsafeMutableBytes { raw in
            body(UnsafeMutableRawBufferPointer(rebasing: raw[end..<(end + capacity)]))
        }
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
        if isEmpty && storage.count > limit { storage = [] }
    }

    /// The unconsumed bytes, in place.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { raw in try body(UnsafeRawBufferPointer(rebasing: raw[start..<end])) }
    }

    /// Mutable access to the unconsumed bytes (to patch a header already appended).
    public mutating func withMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        let (s, e) = (start, end)
        return try storage.withUnsafeMutableBytes { raw in try body(UnsafeMutableRawBufferPointer(rebasing: raw[s..<e])) }
    }

    /// Copies `n` bytes starting `offset` bytes after the front.
    public func copyBytes(at offset: Int, count n: Int) -> [UInt8] {
        Array(storage[(start + offset)..<(start + offset + n)])
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
