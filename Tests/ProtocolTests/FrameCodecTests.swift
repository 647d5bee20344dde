import Testing
@testable import TetherProtocol

@Suite struct FrameCodecTests {
    /// Encodes `frames` back to back with the production encoder.
    func encode(_ frames: [Frame]) -> [UInt8] {
        var encoder = FrameEncoder()
        for frame in frames { encoder.append(frame) }
        return encoder.withPendingBytes { Array($0) }
    }

    func decodeAll(_ bytes: [UInt8], chunks: [Int]) throws -> [Frame] {
        var decoder = FrameDecoder()
        var frames: [Frame] = []
        var offset = 0
        for size in chunks {
            decoder.append(bytes[offset..<(offset + size)])
            offset += size
            while let frame = try decoder.next() { frames.append(frame) }
        }
        #expect(decoder.bufferedBytes == 0)
        return frames
    }

    @Test func everyKnownKindHasASampleFrame() {
        let sampled = Set(Samples.frames.map(\.kind))
        for kind in FrameKind.known { #expect(sampled.contains(kind), "no sample frame of kind \(kind)") }
    }

    @Test func headerLayoutIsBigEndianLengthIdFlagsKind() {
        let bytes = encode([Frame(id: 0x0102_0304, flags: [.start, .end], kind: .stdout, payload: [0xAA, 0xBB])])
        #expect(bytes == [0, 0, 0, 8, 1, 2, 3, 4, 3, 0x12, 0xAA, 0xBB])
    }

    @Test func allFramesInOneRead() throws {
        let frames = Samples.frames
        let bytes = encode(frames)
        #expect(try decodeAll(bytes, chunks: [bytes.count]) == frames)
    }

    @Test func oneByteAtATime() throws {
        let frames = Samples.frames
        let bytes = encode(frames)
        #expect(try decodeAll(bytes, chunks: Array(repeating: 1, count: bytes.count)) == frames)
    }

    /// Every frame, alone, split into two reads at every possible offset.
    @Test func everyFrameAtEverySplitPoint() throws {
        for frame in Samples.frames {
            let bytes = encode([frame])
            for split in 0...bytes.count {
                let decoded = try decodeAll(bytes, chunks: [split, bytes.count - split])
                #expect(decoded == [frame], "frame \(frame.kind) split at \(split)")
            }
        }
    }

    @Test func viewsMatchCopiedFramesAndExposeTheEncodedBytes() throws {
        let frames = Samples.frames
        let bytes = encode(frames)
        var decoder = FrameDecoder()
        decoder.append(bytes)
        var offset = 0
        for frame in frames {
            let (header, encoded, payload) = try #require(try decoder.nextView { view in
                (view.header, Array(view.encoded), Array(view.payload))
            })
            #expect(header == FrameHeader(id: frame.id, flags: frame.flags, kind: frame.kind, payloadCount: frame.payload.count))
            #expect(payload == frame.payload)
            #expect(encoded == Array(bytes[offset..<(offset + encoded.count)]))
            offset += encoded.count
        }
        #expect(try decoder.nextView { _ in true } == nil)
    }

    @Test func lengthBelowSixIsAFramingError() throws {
        for length: UInt8 in 0..<6 {
            var decoder = FrameDecoder()
            decoder.append([0, 0, 0, length])
            #expect(throws: WireError.frameTooSmall(length: UInt32(length))) { try decoder.next() }
        }
    }

    @Test func lengthAboveOneMebibytePlusSixIsAFramingError() throws {
        var decoder = FrameDecoder()
        let tooBig = Frame.maxLength + 1
        decoder.append(withUnsafeBytes(of: tooBig.bigEndian) { Array($0) })
        #expect(throws: WireError.frameTooLarge(length: tooBig)) { try decoder.next() }
        var huge = FrameDecoder()
        huge.append([0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: WireError.frameTooLarge(length: .max)) { try huge.next() }
    }

    @Test func theLargestLegalFrameDecodes() throws {
        let frame = Frame(id: 1, kind: .stdout, payload: Array(repeating: 7, count: Frame.maxPayloadBytes))
        let bytes = encode([frame])
        #expect(bytes.count == Int(Frame.maxLength) + 4)
        #expect(try decodeAll(bytes, chunks: [bytes.count / 3, bytes.count - bytes.count / 3]) == [frame])
    }

    @Test func aPartialHeaderWaitsForMoreBytes() throws {
        var decoder = FrameDecoder()
        decoder.append([0, 0])
        #expect(try decoder.next() == nil)
        decoder.append([0, 6, 0, 0, 0, 1, 0])
        #expect(try decoder.next() == nil)
        decoder.append([0x17])
        #expect(try decoder.next() == Frame(id: 1, kind: .done))
    }

    @Test func readIntoKeepsOnlyWhatWasProduced() throws {
        var decoder = FrameDecoder()
        let bytes = encode([Frame(id: 3, kind: .stdout, payload: [1, 2, 3])])
        let produced = decoder.readInto(capacity: 4096) { buffer in
            buffer.copyBytes(from: bytes)
            return bytes.count
        }
        #expect(produced == bytes.count)
        #expect(decoder.readInto(capacity: 4096) { _ in -1 } == -1)
        #expect(try decoder.next() == Frame(id: 3, kind: .stdout, payload: [1, 2, 3]))
        #expect(decoder.bufferedBytes == 0)
    }

    @Test func fillAppendsAFrameOfExactlyWhatWasRead() throws {
        var encoder = FrameEncoder()
        encoder.append(id: 4, kind: .stdout, maxPayload: 65536) { buffer in
            buffer[0] = 0x61
            buffer[1] = 0x62
            return 2
        }
        // A fill that produced nothing (EAGAIN, EOF) leaves no frame behind.
        #expect(encoder.append(id: 4, kind: .stdout, maxPayload: 65536) { _ in 0 } == 0)
        #expect(encoder.append(id: 4, kind: .stdout, maxPayload: 65536) { _ in -1 } == -1)
        encoder.append(id: 5, flags: .end, Done())
        var decoder = FrameDecoder()
        encoder.withPendingBytes { decoder.append($0) }
        #expect(try decoder.next() == Frame(id: 4, kind: .stdout, payload: [0x61, 0x62]))
        #expect(try decoder.next() == Frame(id: 5, flags: .end, kind: .done, payload: [0xA0]))
        #expect(try decoder.next() == nil)
    }

    @Test func partialConsumptionKeepsTheRestInOrder() throws {
        let frames = Samples.frames
        var encoder = FrameEncoder()
        var decoder = FrameDecoder()
        var decoded: [Frame] = []
        // Interleave appends with partial drains of odd sizes, as a nonblocking writer would.
        for frame in frames {
            encoder.append(frame)
            let take = min(encoder.pendingBytes, 37)
            encoder.withPendingBytes { decoder.append(UnsafeRawBufferPointer(rebasing: $0[0..<take])) }
            encoder.consume(take)
            while let f = try decoder.next() { decoded.append(f) }
        }
        encoder.withPendingBytes { decoder.append($0) }
        encoder.consume(encoder.pendingBytes)
        while let f = try decoder.next() { decoded.append(f) }
        #expect(decoded == frames)
        #expect(encoder.isEmpty)
    }

    @Test func rewriteIDChangesOnlyTheID() throws {
        var encoder = FrameEncoder()
        encoder.append(Frame(id: 1, kind: .stdout, payload: [9]))
        encoder.append(Frame(id: 2, flags: .end, kind: .done, payload: [0xA0]))
        encoder.rewriteID(ofFrameAt: 11, to: 0xDEAD_BEEF)
        var decoder = FrameDecoder()
        encoder.withPendingBytes { decoder.append($0) }
        #expect(try decoder.next() == Frame(id: 1, kind: .stdout, payload: [9]))
        #expect(try decoder.next() == Frame(id: 0xDEAD_BEEF, flags: .end, kind: .done, payload: [0xA0]))
    }

    @Test func aLongStreamDoesNotGrowTheBuffersWithoutBound() throws {
        var encoder = FrameEncoder()
        var decoder = FrameDecoder()
        let payload = [UInt8](repeating: 1, count: 65536)
        for _ in 0..<2000 {
            encoder.append(id: 1, kind: .stdout, payload: payload)
            encoder.withPendingBytes { decoder.append($0) }
            encoder.consume(encoder.pendingBytes)
            _ = try decoder.nextView { $0.header.payloadCount }
        }
        #expect(decoder.bufferedBytes == 0)
    }

    @Test func kindsHaveNames() {
        #expect(FrameKind.stdinError.description == "stdinError(0x15)")
        #expect(FrameKind(rawValue: 0xEE).description == "unknown(0xee)")
        #expect(FrameKind.stdout.isData && FrameKind.stdin.isData && !FrameKind.ack.isData)
    }
}

@Suite struct ByteQueueTests {
    @Test func interleavedAppendAndConsumeKeepOrder() {
        var queue = ByteQueue()
        var model: [UInt8] = []
        var next: UInt8 = 0
        for round in 0..<5000 {
            let add = (round * 7919) % 300
            var chunk: [UInt8] = []
            for _ in 0..<add { chunk.append(next); next &+= 1 }
            chunk.withUnsafeBytes { queue.append($0) }
            model += chunk
            let take = min(model.count, (round * 104_729) % 290)
            queue.consume(take)
            model.removeFirst(take)
            #expect(queue.count == model.count)
        }
        #expect(queue.withBytes { Array($0) } == model)
        // Storage stays proportional to what was live, not to everything ever appended.
        #expect(queue.capacity <= 64 << 10)
    }

    @Test func aCopyIsIndependentOfTheQueueItCameFrom() {
        var original = ByteQueue()
        original.append(contentsOf: Array(0..<100 as Range<UInt8>))
        original.consume(10)
        var copy = original
        copy.append(contentsOf: [200, 201])
        copy.withMutableBytes { $0[0] = 99 }
        original.consume(5)
        #expect(original.withBytes { Array($0) } == Array(15..<100 as Range<UInt8>))
        #expect(copy.count == 92)
        #expect(copy.withBytes { Array($0.prefix(3)) } == [99, 11, 12])
        #expect(copy.withBytes { Array($0.suffix(2)) } == [200, 201])
        #expect(copy.copyBytes(at: 89, count: 3) == [99, 200, 201])
        // A queue read straight into (as from a socket) keeps only what the reader produced.
        var read = ByteQueue()
        let produced = read.append(capacity: 1 << 20) { buffer in
            buffer.storeBytes(of: 7, toByteOffset: 0, as: UInt8.self)
            return 1
        }
        #expect(produced == 1 && read.count == 1 && read.withBytes { Array($0) } == [7])
        read.consume(1)
        read.releaseStorageIfEmpty(above: 4096)
        #expect(read.capacity == 0 && read.isEmpty)
    }
}
