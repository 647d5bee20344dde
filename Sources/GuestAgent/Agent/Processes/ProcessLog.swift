import TetherPosix
import TetherProtocol

/// A named process's output: a ring of bytes with absolute offsets (the first byte the process
/// ever wrote is offset 0, across restarts), stdout and stderr interleaved in the order the
/// agent read them, each run of bytes tagged with its stream. Bounded: beyond `capacity` the
/// oldest bytes are dropped, and `start` (the oldest offset still held) says how many.
///
/// A reader that remembers the offset after the last byte it saw resumes there with no gap
/// and no duplicate, as long as the ring still holds that offset. Holds no descriptor; lives
/// on the agent's loop thread.
struct ProcessLog {
    /// Stream changes kept at most: many tiny alternating stdout/stderr writes would otherwise
    /// cost a marker each; beyond this the oldest bytes go, as when the ring is full.
    static let maxMarkers = 65_536
    /// The storage starts this small and doubles as output comes, up to `capacity`: a quiet
    /// process costs the agent kilobytes, not its whole ring.
    static let initialStorageBytes = 16 << 10

    let capacity: Int
    /// Byte `offset` lives at `offset % ring.count`.
    private var ring: [UInt8]
    /// Offset of the oldest byte held, and the offset the next byte will get.
    private(set) var start: UInt64 = 0
    private(set) var end: UInt64 = 0
    /// Where each run of one stream begins, oldest first; the first may begin before `start`.
    private var markers = HeadQueue<(offset: UInt64, kind: FrameKind)>()

    init(capacity: Int) {
        self.capacity = max(1, capacity)
        ring = [UInt8](repeating: 0, count: min(self.capacity, Self.initialStorageBytes))
    }

    /// Grows the storage (doubling, at most to `capacity`) so that `incoming` more bytes fit
    /// beside what is held; every held byte moves to its place in the larger ring.
    private mutating func makeRoom(for incoming: Int) {
        let wanted = min(capacity, Int(end - start) + incoming)
        guard wanted > ring.count else { return }
        var size = ring.count
        while size < wanted { size = min(capacity, size * 2) }
        let held = tail(Int(end - start))
        var grown = [UInt8](repeating: 0, count: size)
        for (i, byte) in held.enumerated() { grown[Int((start + UInt64(i)) % UInt64(size))] = byte }
        ring = grown
    }

    var isEmpty: Bool { start == end }
    var droppedBytes: UInt64 { start }

    mutating func append(kind: FrameKind, _ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        if markers.isEmpty || markers[markers.count - 1].kind != kind { markers.append((end, kind)) }
        // Only the last `capacity` bytes of a huge write can stay.
        let kept = bytes.count > capacity ? UnsafeRawBufferPointer(rebasing: bytes[(bytes.count - capacity)...]) : bytes
        makeRoom(for: kept.count)
        let size = ring.count
        let skipped = UInt64(bytes.count - kept.count)
        var position = Int((end + skipped) % UInt64(size))
        var copied = 0
        ring.withUnsafeMutableBytes { storage in
            while copied < kept.count {
                let n = min(kept.count - copied, size - position)
                storage.baseAddress!.advanced(by: position).copyMemory(from: kept.baseAddress!.advanced(by: copied), byteCount: n)
                copied += n
                position = (position + n) % size
            }
        }
        end += UInt64(bytes.count)
        if end - start > UInt64(capacity) { drop(upTo: end - UInt64(capacity)) }
        while markers.count > Self.maxMarkers { drop(upTo: markers[1].offset) }
    }

    /// Forgets every byte before `offset`.
    private mutating func drop(upTo offset: UInt64) {
        start = max(start, min(offset, end))
        while markers.count > 1 && markers[1].offset <= start { _ = markers.removeFirst() }
    }

    /// The run of bytes of one stream at `offset` (which must lie in start..<end), at most
    /// `limit` long and not crossing the ring's physical end: the caller loops for more.
    func withRun<R>(at offset: UInt64, limit: Int, _ body: (FrameKind, UnsafeRawBufferPointer) -> R) -> R {
        precondition(offset >= start && offset < end, "offset outside the log")
        let index = markerIndex(containing: offset)
        let runEnd = index + 1 < markers.count ? markers[index + 1].offset : end
        let position = Int(offset % UInt64(ring.count))
        let count = min(limit, Int(runEnd - offset), ring.count - position)
        return ring.withUnsafeBytes { storage in
            body(markers[index].kind, UnsafeRawBufferPointer(rebasing: storage[position..<(position + count)]))
        }
    }

    /// The last marker that begins at or before `offset` (binary search: markers are sorted).
    private func markerIndex(containing offset: UInt64) -> Int {
        var low = 0
        var high = markers.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if markers[middle].offset <= offset { low = middle } else { high = middle - 1 }
        }
        return low
    }

    /// The last `count` bytes held, streams interleaved (for errors).
    func tail(_ count: Int) -> [UInt8] {
        var offset = end - min(UInt64(count), end - start)
        var result: [UInt8] = []
        result.reserveCapacity(Int(end - offset))
        while offset < end {
            let n = withRun(at: offset, limit: Int(end - offset)) { _, bytes in
                result.append(contentsOf: bytes)
                return bytes.count
            }
            offset += UInt64(n)
        }
        return result
    }
}
