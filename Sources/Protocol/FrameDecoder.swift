/// A framing error: the byte stream cannot be split into frames any more, so the receiver
/// answers `error{code: framing}` on id 0 and closes that one connection.
public enum WireError: Error, Equatable, Sendable {
    /// `len` below 6: not even room for id, flags and kind.
    case frameTooSmall(length: UInt32)
    /// `len` above 1 MiB + 6.
    case frameTooLarge(length: UInt32)

    public var description: String {
        switch self {
        case .frameTooSmall(let n): "frame length \(n) is below the minimum of \(Frame.headerBytesAfterLength)"
        case .frameTooLarge(let n): "frame length \(n) is above the maximum of \(Frame.maxLength)"
        }
    }
}

/// The header fields of a frame, read without copying its payload.
public struct FrameHeader: Equatable, Sendable {
    public var id: UInt32
    public var flags: FrameFlags
    public var kind: FrameKind
    public var payloadCount: Int
}

/// A frame inside the decoder's buffer, valid only during the closure it is passed to.
public struct FrameView {
    public let header: FrameHeader
    /// The whole encoded frame, length prefix included (what a router forwards).
    public let encoded: UnsafeRawBufferPointer
    public var payload: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: encoded[Frame.headerBytes...]) }
}

extension Frame {
    /// A copy of the frame a view shows, to keep beyond the view's closure.
    public init(_ view: FrameView) {
        self.init(id: view.header.id, flags: view.header.flags, kind: view.header.kind, payload: Array(view.payload))
    }
}

/// Splits a byte stream into frames, whatever the reads' boundaries: one byte at a time or
/// many frames at once yield the same frames. Bytes can be read straight into its buffer
/// (`readInto`) so the receive path copies nothing until a payload is taken.
///
/// After it throws, the stream is unusable: discard the decoder and close the connection.
public struct FrameDecoder: Sendable {
    private var queue = ByteQueue()

    public init() {}

    /// Bytes received but not yet returned as frames.
    public var bufferedBytes: Int { queue.count }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) { queue.append(bytes) }
    public mutating func append(_ bytes: some Sequence<UInt8>) { queue.append(contentsOf: bytes) }

    /// Lets `body` write up to `capacity` bytes (e.g. read(2)) directly after the buffered
    /// bytes; it returns how many it wrote, or a negative/zero value for none.
    @discardableResult
    public mutating func readInto(capacity: Int, _ body: (UnsafeMutableRawBufferPointer) -> Int) -> Int {
        queue.append(capacity: capacity, body)
    }

    /// Frees a large idle buffer (after a burst of big frames).
    public mutating func releaseStorageIfIdle() { queue.releaseStorageIfEmpty(above: 1 << 20) }

    /// The header of the next complete frame, or nil when more bytes are needed.
    private func peekHeader() throws(WireError) -> FrameHeader? {
        let parsed: Result<FrameHeader?, WireError> = queue.withBytes { raw in
            guard raw.count >= 4 else { return .success(nil) }
            let length = UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
            if length < UInt32(Frame.headerBytesAfterLength) { return .failure(.frameTooSmall(length: length)) }
            if length > Frame.maxLength { return .failure(.frameTooLarge(length: length)) }
            guard raw.count >= 4 + Int(length) else { return .success(nil) }
            return .success(FrameHeader(
                id: UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: 4, as: UInt32.self)),
                flags: FrameFlags(rawValue: raw[8]),
                kind: FrameKind(rawValue: raw[9]),
                payloadCount: Int(length) - Frame.headerBytesAfterLength))
        }
        return try parsed.get()
    }

    /// The next complete frame, copied out; nil when more bytes are needed.
    public mutating func next() throws(WireError) -> Frame? {
        guard let header = try peekHeader() else { return nil }
        let payload = queue.copyBytes(at: Frame.headerBytes, count: header.payloadCount)
        queue.consume(Frame.headerBytes + header.payloadCount)
        return Frame(id: header.id, flags: header.flags, kind: header.kind, payload: payload)
    }

    /// Hands the next complete frame to `body` in place, without copying; nil when more
    /// bytes are needed. The view must not escape the closure.
    public mutating func nextView<R>(_ body: (FrameView) -> R) throws(WireError) -> R? {
        guard let header = try peekHeader() else { return nil }
        let frameBytes = Frame.headerBytes + header.payloadCount
        let result = queue.withBytes { raw in
            body(FrameView(header: header, encoded: UnsafeRawBufferPointer(rebasing: raw[0..<frameBytes])))
        }
        queue.consume(frameBytes)
        return result
    }
}
