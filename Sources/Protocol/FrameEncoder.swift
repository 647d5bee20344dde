/// An outbound byte queue of encoded frames. Frames are written straight into one reusable
/// buffer (no allocation per frame once it has grown), and a writer drains it from the front
/// with partial writes (`withPendingBytes` + `consume`).
public struct FrameEncoder: Sendable {
    private var queue = ByteQueue()
    /// Reused for CBOR payloads, which are encoded before their length is known.
    private var scratch = CBORWriter()

    public init() {}

    /// Encoded bytes not yet consumed by the writer.
    public var pendingBytes: Int { queue.count }
    public var isEmpty: Bool { queue.isEmpty }

    /// Lets `body` see the pending bytes (to write(2) them); returns what `body` returns.
    public func withPendingBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R { queue.withBytes(body) }

    /// Drops `count` bytes from the front after they were written.
    public mutating func consume(_ count: Int) { queue.consume(count) }

    /// Removes everything not yet written.
    public mutating func reset() { queue.removeAll() }

    /// Frees a large idle buffer (after a burst).
    public mutating func releaseStorageIfIdle() { queue.releaseStorageIfEmpty(above: 1 << 20) }

    @inline(__always)
    private mutating func appendHeader(payloadCount: Int, id: UInt32, flags: FrameFlags, kind: FrameKind) {
        precondition(payloadCount <= Frame.maxPayloadBytes, "frame payload above the protocol maximum")
        var header: (UInt32, UInt32, UInt8, UInt8) = (
            UInt32(payloadCount + Frame.headerBytesAfterLength).bigEndian, id.bigEndian, flags.rawValue, kind.rawValue)
        // The tuple's layout is 4 + 4 + 1 + 1 bytes with no padding between its fields.
        withUnsafeBytes(of: &header) { queue.append(UnsafeRawBufferPointer(rebasing: $0[0..<Frame.headerBytes])) }
    }

    /// Appends a frame with a raw payload (data kinds, or a payload encoded elsewhere).
    public mutating func append(id: UInt32, flags: FrameFlags = [], kind: FrameKind, payload: UnsafeRawBufferPointer) {
        appendHeader(payloadCount: payload.count, id: id, flags: flags, kind: kind)
        queue.append(payload)
    }

    public mutating func append(id: UInt32, flags: FrameFlags = [], kind: FrameKind, payload: [UInt8]) {
        payload.withUnsafeBytes { append(id: id, flags: flags, kind: kind, payload: $0) }
    }

    public mutating func append(_ frame: Frame) {
        append(id: frame.id, flags: frame.flags, kind: frame.kind, payload: frame.payload)
    }

    /// Appends a message frame.
    public mutating func append<M: Message>(id: UInt32, flags: FrameFlags = [], _ message: M) {
        scratch.bytes.removeAll(keepingCapacity: true)
        message.encode(to: &scratch)
        let payload = scratch.bytes
        payload.withUnsafeBytes { append(id: id, flags: flags, kind: M.kind, payload: $0) }
    }

    /// Appends an already encoded frame (length prefix included), for routers.
    public mutating func append(encoded: UnsafeRawBufferPointer) { queue.append(encoded) }

    /// Appends a frame whose payload `fill` writes directly (e.g. read(2) from a child's pipe),
    /// up to `maxPayload` bytes. If `fill` returns zero or less, nothing is appended. Returns
    /// what `fill` returned.
    @discardableResult
    public mutating func append(id: UInt32, flags: FrameFlags = [], kind: FrameKind, maxPayload: Int,
                                fill: (UnsafeMutableRawBufferPointer) -> Int) -> Int {
        appendHeader(payloadCount: maxPayload, id: id, flags: flags, kind: kind)
        let produced = queue.append(capacity: maxPayload, fill)
        if produced <= 0 {
            queue.truncate(droppingLast: Frame.headerBytes)
            return produced
        }
        let headerOffset = queue.count - Frame.headerBytes - produced
        let length = UInt32(produced + Frame.headerBytesAfterLength).bigEndian
        queue.withMutableBytes { raw in raw.storeBytes(of: length, toByteOffset: headerOffset, as: UInt32.self) }
        return produced
    }

    /// Rewrites the session id of the frame that starts `offset` bytes into the pending bytes.
    public mutating func rewriteID(ofFrameAt offset: Int, to id: UInt32) {
        queue.withMutableBytes { raw in raw.storeBytes(of: id.bigEndian, toByteOffset: offset + Frame.idOffset, as: UInt32.self) }
    }
}

/// Per-session flow control (docs/PROTOCOL.md, section 8).
public enum FlowControl {
    /// Bytes of data-frame payload a sender may have unacknowledged, per session and direction.
    public static let initialWindowBytes = 256 << 10
    /// A reader acks at least every this many consumed bytes.
    public static let ackThresholdBytes = initialWindowBytes / 2
    /// An upload's stdin window: the agent acks this much minus the initial window ahead as
    /// soon as it accepts an `fsWrite` (PROTOCOL.md 8). Both ends hash every byte; with one
    /// window in flight they took turns instead of working at once.
    public static let uploadWindowBytes = 4 * initialWindowBytes
    /// An output stream's window, widened by acking ahead: Tether's clients do it when they
    /// start an exec or a file read, and a relay lets a client's output window grow this far
    /// and no further. With one 256 KiB window in flight the processes of a stream took turns
    /// (1 GiB of stdout in 0.84-1.49 s, 0.67-1.0 s with 512 KiB); 1 MiB was faster still
    /// (0.51-0.67 s) but raised the agent's peak RSS past its 8 MB budget (10.2 MB).
    public static let outputWindowBytes = 2 * initialWindowBytes
}
