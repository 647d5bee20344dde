import TetherPosix
import TetherProtocol

/// A session's events that could not go out yet, in order: output read from its pipes and the
/// `exited` marker. Attached sessions hold here only what was read when the leader was reaped
/// while the window was spent (bounded by the pipes' sizes) and what arrives after that;
/// unattached ones (detached, or their connection gone) keep reading into it so the program
/// never blocks, and the oldest output is dropped beyond `capacityBytes` (counted, reported in
/// `attached{droppedBytes}`). The `exited` marker is never dropped.
struct OutputBacklog {
    enum Record {
        case data(FrameKind, [UInt8])
        case exited(Exited)
    }

    /// Output kept for a session nobody watches.
    static let capacityBytes = 1 << 20
    /// Records kept at most (many tiny alternating stdout/stderr writes do not merge).
    static let capacityRecords = 16_384
    /// Adjacent output of one stream is merged into records of at most this size.
    static let mergeBytes = 64 << 10

    /// Oldest first; position 0 is the head.
    private var records = HeadQueue<Record>()
    /// Bytes of the head record already sent.
    private var headOffset = 0
    private(set) var dataBytes = 0
    /// Output dropped since the last attach.
    var droppedBytes: UInt64 = 0

    var isEmpty: Bool { records.isEmpty }

    enum Head {
        case data(FrameKind)
        case exited(Exited)
    }

    /// What the oldest record is.
    var oldest: Head? {
        guard let first = records.first else { return nil }
        switch first {
        case .data(let kind, _): return .data(kind)
        case .exited(let exited): return .exited(exited)
        }
    }

    /// The not yet sent bytes of the oldest record (empty unless it is output).
    func withHeadBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        guard case .data(_, let bytes) = records.first else { return body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return bytes.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[headOffset...])) }
    }

    /// Appends output; with `bounded`, drops the oldest output to stay under the capacity.
    mutating func append(kind: FrameKind, _ bytes: UnsafeRawBufferPointer, bounded: Bool) {
        guard bytes.count > 0 else { return }
        if let last = records.indices.last, case .data(let lastKind, var lastBytes) = records[last],
           lastKind == kind, lastBytes.count + bytes.count <= Self.mergeBytes {
            records[last] = .data(kind, [])          // keep the array uniquely referenced
            lastBytes.append(contentsOf: bytes)
            records[last] = .data(kind, lastBytes)
        } else {
            records.append(.data(kind, Array(bytes)))
        }
        dataBytes += bytes.count
        if bounded { dropOldest() }
    }

    mutating func appendExited(_ exited: Exited) { records.append(.exited(exited)) }

    /// Marks `count` bytes of the head data record as sent (all of a marker for `.exited`).
    mutating func consumeFirst(bytes count: Int) {
        guard let first = records.first else { return }
        if case .data(_, let bytes) = first {
            headOffset += count
            dataBytes -= count
            if headOffset < bytes.count { return }
        }
        popHead()
    }

    /// Forgets all output (attach without replay); keeps the `exited` marker.
    mutating func discardData() {
        records.removeAll { if case .data = $0 { return true }; return false }
        headOffset = 0
        dataBytes = 0
    }

    private mutating func popHead() {
        records.removeFirst()
        headOffset = 0
    }

    /// Removes the record at `position` (the queue removes by predicate, in order).
    private mutating func remove(at position: Int) {
        var current = 0
        records.removeAll { _ in
            defer { current += 1 }
            return current == position
        }
    }

    private mutating func dropOldest() {
        while dataBytes > Self.capacityBytes || records.count > Self.capacityRecords {
            guard let index = records.indices.first(where: { if case .data = records[$0] { return true }; return false }) else { return }
            guard case .data(let kind, let bytes) = records[index] else { return }
            let offset = index == 0 ? headOffset : 0
            let available = bytes.count - offset
            let excess = dataBytes - Self.capacityBytes
            if excess > 0 && excess < available && records.count <= Self.capacityRecords {
                // Drop just the oldest part of this record.
                if index == 0 {
                    headOffset += excess
                } else {
                    records[index] = .data(kind, Array(bytes[excess...]))
                }
                dataBytes -= excess
                droppedBytes += UInt64(excess)
                return
            }
            dataBytes -= available
            droppedBytes += UInt64(available)
            if index == 0 {
                popHead()
            } else {
                remove(at: index)
            }
        }
    }
}
