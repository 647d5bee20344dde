// libFuzzer target over everything that parses bytes from a peer in TetherProtocol: the frame
// decoder (fed in reads of varying size), the CBOR decoder, and every message decoder.
// Built by scripts/fuzz.sh into the TetherProtocol module itself (no import needed).
//
// Invariants checked beyond "no trap": the same bytes split differently give the same frames,
// and a message that decodes re-encodes to bytes that decode to an equal message.

let messageTypes: [any Message.Type] = [
    Hello.self, ErrorMessage.self, Ping.self, Pong.self, Shutdown.self, ExecRequest.self, Started.self,
    StdinError.self, Exited.self, Done.self, Failed.self, Resize.self, SignalRequest.self, KillRequest.self,
    Ack.self, ListSessions.self, SessionList.self, Attach.self, Attached.self, Detach.self, Detached.self,
]

func decodeStream(_ bytes: UnsafeRawBufferPointer, chunk: Int) -> ([Frame], WireError?) {
    var decoder = FrameDecoder()
    var frames: [Frame] = []
    var offset = 0
    while offset < bytes.count {
        let end = min(bytes.count, offset + chunk)
        decoder.append(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
        offset = end
        do {
            while let frame = try decoder.next() { frames.append(frame) }
        } catch {
            return (frames, error)
        }
    }
    return (frames, nil)
}

/// Decodes the payload once, then reads it as every message type.
func checkMessages(_ payload: UnsafeRawBufferPointer) {
    guard case .map(let map)? = try? CBORDecoder.decode(payload) else { return }
    for type in messageTypes { checkMessage(type, map) }
}

func checkMessage<M: Message>(_ type: M.Type, _ map: CBORMap) {
    guard let message = try? M(from: MessageReader(map)) else { return }
    guard let again = try? M(cbor: message.cborBytes), again == message else {
        fatalError("\(M.self) does not survive re-encoding")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    guard size > 0 else { return 0 }
    let chunk = Int(input[0]) + 1
    let stream = UnsafeRawBufferPointer(rebasing: input[1...])

    // Frames: whole versus split reads must agree.
    let (whole, wholeError) = decodeStream(stream, chunk: max(stream.count, 1))
    let (split, splitError) = decodeStream(stream, chunk: chunk)
    if whole != split || wholeError != splitError { fatalError("frame decoding depends on read boundaries") }

    for frame in whole where !frame.kind.isData {
        frame.payload.withUnsafeBytes { checkMessages($0) }
    }
    // The raw input as one CBOR item, and as every message.
    if let value = try? CBORDecoder.decode(stream) {
        var writer = CBORWriter()
        writer.value(value)
        guard let again = try? CBORDecoder.decode(writer.bytes), again.description == value.description else {
            fatalError("CBOR value does not survive re-encoding")
        }
    }
    checkMessages(stream)
    return 0
}
