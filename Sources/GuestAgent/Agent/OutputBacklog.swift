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

    private var records: [Record] = []
    private var head = 0
    /// Bytes of the head record already sent.
    private var headOffset = 0
    private(set) var dataBytes = 0
    /// Output dropped since the last attach.
    var droppedBytes: UInt64 = 0

    var isEmpty: Bool { head == records.count }

    enum Head {
        case data(FrameKind)
        case exited(Exited)
    }

    /// What the oldest record is.
    var oldest: Head? {
        guard head < records.count else { return nil }
        switch records[head] {
        case .data(let kind, _): return .data(kind)
        case .exited(let exited): return .exited(exited)
        }
    }

    /// The not yet sent bytes of the oldest record (empty unless it is output).
    func withHeadBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        guard head < records.count, case .data(_, let bytes) = records[head] else { return body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return bytes.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[headOffset...])) }
    }

    /// Appends output; with `bounded`, drops the oldest output to stay under the capacity.
    mutating func append(kind: FrameKind, _ bytes: UnsafeRawBufferPointer, bounded: Bool) {
        guard bytes.count > 0 else { return }
        if let last = records.indices.last, last >= head, case .data(let lastKind, var lastBytes) = records[last],
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
        guard head < records.count else { return }
        if case .data(_, let bytes) = records[head] {
            headOffset += count
            dataBytes -= count
            if headOffset < bytes.count { return }
        }
        popHead()
    }

    /// Forgets all output (attach without replay); keeps the `exited` marker.
    mutating func discardData() {
        var kept: [Record] = []
        for record in records[head...] { if case .exited = record { kept.append(record) } }
        records = kept
        head = 0
        headOffset = 0
        dataBytes = 0
    }

    private mutating func popHead() {
        head += 1
        headOffset = 0
        if head == records.count {
            records.removeAll(keepingCapacity: records.count < 64)
            head = 0
        } else if head >= 1024 && head * 2 >= records.count {
            records.removeFirst(head)
            head = 0
        }
    }

    private mutating func dropOldest() {
        while dataBytes > Self.capacityBytes || records.count - head > Self.capacityRecords {
            guard let index = records[head...].firstIndex(where: { if case .data = $0 { return true }; return false }) else { return }
            guard case .data(let kind, let bytes) = records[index] else { return }
            let offset = index == head ? headOffset : 0
            let available = bytes.count - offset
            let excess = dataBytes - Self.capacityBytes
            if excess > 0 && excess < available && records.count - head <= Self.capacityRecords {
                // Drop just the oldest part of this record.
                if index == head {
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
            if index == head {
                popHead()
            } else {
                records.remove(at: index)
            }
        }
    }
}
