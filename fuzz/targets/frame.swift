// libFuzzer target: the frame decoder alone. The first byte picks the read size; the rest is the
// byte stream. The same bytes split differently must give the same frames and the same error,
// and every frame decoded must re-encode to exactly the bytes it came from. The same bytes also
// go through the tunnel preamble reader (what agent and relay read first on a tunnel
// connection): fed in pieces, it must reach the same answer as fed whole.

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

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    guard size > 0 else { return 0 }
    let chunk = Int(input[0]) + 1
    let stream = UnsafeRawBufferPointer(rebasing: input[1...])
    let (whole, wholeError) = decodeStream(stream, chunk: max(stream.count, 1))
    let (split, splitError) = decodeStream(stream, chunk: chunk)
    if whole != split || wholeError != splitError { fatalError("frame decoding depends on read boundaries") }
    // Decoded frames are a prefix of the stream, byte for byte.
    var encoder = FrameEncoder()
    for frame in whole { encoder.append(id: frame.id, flags: frame.flags, kind: frame.kind, payload: frame.payload) }
    let same = encoder.withPendingBytes { $0.elementsEqual(stream.prefix($0.count)) }
    if !same { fatalError("a frame does not re-encode to its bytes") }
    checkTunnelPreamble(Array(stream), chunk: chunk)
    return 0
}

func checkTunnelPreamble(_ bytes: [UInt8], chunk: Int) {
    func outcome(_ prefix: ArraySlice<UInt8>) -> String {
        do {
            guard let (frame, consumed) = try TunnelPreamble.decode(prefix) else { return "more" }
            if consumed > TunnelPreamble.maxBytes || consumed > prefix.count { fatalError("preamble consumed \(consumed)") }
            _ = try? frame.decode(TunnelOpen.self)
            _ = try? frame.decode(TunnelOpened.self)
            return "frame \(frame.kind.rawValue) \(consumed)"
        } catch {
            return "\(error)"
        }
    }
    let whole = outcome(bytes[...])
    var end = 0
    var piecewise = "more"
    while piecewise == "more" && end < bytes.count {
        end = min(bytes.count, end + chunk)
        piecewise = outcome(bytes[..<end])
    }
    if whole != piecewise { fatalError("the tunnel preamble depends on read boundaries: \(whole) vs \(piecewise)") }
}
