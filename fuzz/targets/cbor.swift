// libFuzzer target: the CBOR decoder alone, under the default limits and under tight ones.
// A value that decodes must re-encode to bytes that decode to the same value.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    for limits in [CBORLimits.default, CBORLimits(maxDepth: 2, maxItems: 8)] {
        guard let value = try? CBORDecoder.decode(input, limits: limits) else { continue }
        var writer = CBORWriter()
        writer.value(value)
        guard let again = try? CBORDecoder.decode(writer.bytes), again.description == value.description else {
            fatalError("CBOR value does not survive re-encoding")
        }
    }
    return 0
}
