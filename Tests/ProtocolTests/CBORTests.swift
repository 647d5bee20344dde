import Testing
@testable import TetherProtocol

func hex(_ string: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var chars = Array(string.utf8)
    if chars.count % 2 == 1 { chars.insert(UInt8(ascii: "0"), at: 0) }
    for i in stride(from: 0, to: chars.count, by: 2) {
        bytes.append(UInt8(String(decoding: chars[i...i + 1], as: UTF8.self), radix: 16)!)
    }
    return bytes
}

func encoded(_ value: CBORValue) -> [UInt8] {
    var writer = CBORWriter()
    writer.value(value)
    return writer.bytes
}

@Suite struct CBORTests {
    /// RFC 8949 Appendix A: encodings and their diagnostic notation.
    static let appendixA: [(String, String)] = [
        ("00", "0"), ("01", "1"), ("0a", "10"), ("17", "23"), ("1818", "24"), ("1819", "25"), ("1864", "100"),
        ("1903e8", "1000"), ("1a000f4240", "1000000"), ("1b000000e8d4a51000", "1000000000000"),
        ("1bffffffffffffffff", "18446744073709551615"), ("3bffffffffffffffff", "-18446744073709551616"),
        ("20", "-1"), ("29", "-10"), ("3863", "-100"), ("3903e7", "-1000"),
        ("f90000", "0.0"), ("f98000", "-0.0"), ("f93c00", "1.0"), ("fb3ff199999999999a", "1.1"), ("f93e00", "1.5"),
        ("f97bff", "65504.0"), ("fa47c35000", "100000.0"), ("fa7f7fffff", "3.4028234663852886e+38"),
        ("fb7e37e43c8800759c", "1e+300"), ("f90001", "5.960464477539063e-08"), ("f90400", "6.103515625e-05"),
        ("f9c400", "-4.0"), ("fbc010666666666666", "-4.1"), ("f97c00", "inf"), ("f9fc00", "-inf"),
        ("f4", "false"), ("f5", "true"), ("f6", "null"), ("f7", "undefined"), ("f0", "simple(16)"), ("f8ff", "simple(255)"),
        ("c074323031332d30332d32315432303a30343a30305a", "0(\"2013-03-21T20:04:00Z\")"),
        ("c11a514b67b0", "1(1363896240)"), ("d82076687474703a2f2f7777772e6578616d706c652e636f6d", "32(\"http://www.example.com\")"),
        ("40", "h''"), ("4401020304", "h'01020304'"), ("60", "\"\""), ("6161", "\"a\""), ("6449455446", "\"IETF\""),
        ("62225c", "\"\\\"\\\\\""), ("62c3bc", "\"\\u{FC}\""), ("63e6b0b4", "\"\\u{6C34}\""), ("64f0908591", "\"\\u{10151}\""),
        ("80", "[]"), ("83010203", "[1, 2, 3]"), ("8301820203820405", "[1, [2, 3], [4, 5]]"),
        ("98190102030405060708090a0b0c0d0e0f101112131415161718181819",
         "[" + (1...25).map(String.init).joined(separator: ", ") + "]"),
        ("a0", "{}"), ("a201020304", "{1: 2, 3: 4}"), ("a26161016162820203", "{\"a\": 1, \"b\": [2, 3]}"),
        ("826161a161626163", "[\"a\", {\"b\": \"c\"}]"),
        // Indefinite lengths (decode only).
        ("5f42010243030405ff", "h'0102030405'"), ("7f657374726561646d696e67ff", "\"streaming\""),
        ("9fff", "[]"), ("9f018202039f0405ffff", "[1, [2, 3], [4, 5]]"), ("83018202039f0405ff", "[1, [2, 3], [4, 5]]"),
        ("bf61610161629f0203ffff", "{\"a\": 1, \"b\": [2, 3]}"), ("bf6346756ef563416d7421ff", "{\"Fun\": true, \"Amt\": -2}"),
    ]

    @Test func decodesEveryRFC8949AppendixAExample() throws {
        for (bytes, diagnostic) in Self.appendixA {
            #expect(try CBORDecoder.decode(hex(bytes)).description == diagnostic, "decoding \(bytes)")
        }
    }

    @Test func encodesIntegersStringsArraysAndMapsInPreferredForm() throws {
        // Everything in Appendix A that has definite lengths and no floats re-encodes to the same bytes.
        for (bytes, _) in Self.appendixA {
            let input = hex(bytes)
            if [0x5F, 0x7F, 0x9F, 0xBF].contains(input[0]) || bytes.contains("9f") || input[0] >> 5 == 7 { continue }
            #expect(encoded(try CBORDecoder.decode(input)) == input, "re-encoding \(bytes)")
        }
    }

    @Test func integerBoundariesUseTheShortestArgument() {
        let cases: [(Int64, String)] = [
            (0, "00"), (23, "17"), (24, "1818"), (255, "18ff"), (256, "190100"), (65535, "19ffff"),
            (65536, "1a00010000"), (4_294_967_295, "1affffffff"), (4_294_967_296, "1b0000000100000000"),
            (-1, "20"), (-24, "37"), (-25, "3818"), (-256, "38ff"), (-257, "390100"), (Int64.min, "3b7fffffffffffffff"),
        ]
        for (value, expected) in cases {
            var w = CBORWriter()
            w.int(value)
            #expect(w.bytes == hex(expected), "\(value)")
        }
    }

    @Test func rejectsInvalidUTF8InTextWithAnOffset() {
        #expect(throws: CBORError.invalidUTF8(offset: 0)) { try CBORDecoder.decode(hex("62c328")) }
        #expect(throws: CBORError.invalidUTF8(offset: 1)) { try CBORDecoder.decode(hex("8161ff")) }
        // Each chunk of an indefinite text string must be valid on its own.
        #expect(throws: CBORError.invalidUTF8(offset: 1)) { try CBORDecoder.decode(hex("7f61c361bcff")) }
    }

    @Test func everyTruncationOfEveryMessageIsATypedError() {
        for message in Samples.messages {
            let bytes = message.cborBytes
            for cut in 0..<bytes.count {
                do {
                    _ = try CBORDecoder.decode(Array(bytes[0..<cut]))
                    Issue.record("a truncated \(type(of: message)) decoded at \(cut) of \(bytes.count)")
                } catch {
                    // Any typed CBORError is right; what matters is no trap and no value.
                }
            }
        }
    }

    @Test func reservedAdditionalInformationIsRejected() {
        for major: UInt8 in 0...7 {
            for info: UInt8 in 28...30 {
                let byte = major << 5 | info
                #expect(throws: CBORError.reservedAdditionalInfo(offset: 0, value: info)) { try CBORDecoder.decode([byte, 0, 0, 0, 0, 0, 0, 0, 0]) }
            }
        }
    }

    @Test func indefiniteLengthWhereItIsNotAllowed() {
        #expect(throws: CBORError.invalidIndefiniteLength(offset: 0)) { try CBORDecoder.decode(hex("1f")) }
        #expect(throws: CBORError.invalidIndefiniteLength(offset: 0)) { try CBORDecoder.decode(hex("3f")) }
        #expect(throws: CBORError.invalidIndefiniteLength(offset: 0)) { try CBORDecoder.decode(hex("df00")) }
        // A chunk of another major type, or a nested indefinite chunk.
        #expect(throws: CBORError.invalidIndefiniteLength(offset: 1)) { try CBORDecoder.decode(hex("5f6161ff")) }
        #expect(throws: CBORError.invalidIndefiniteLength(offset: 1)) { try CBORDecoder.decode(hex("5f5fffff")) }
    }

    @Test func breaksOutsideIndefiniteItemsAreRejected() {
        #expect(throws: CBORError.unexpectedBreak(offset: 0)) { try CBORDecoder.decode(hex("ff")) }
        #expect(throws: CBORError.unexpectedBreak(offset: 1)) { try CBORDecoder.decode(hex("81ff")) }
        // A map that ends after a key, before its value.
        #expect(throws: CBORError.unexpectedBreak(offset: 2)) { try CBORDecoder.decode(hex("bf01ff")) }
    }

    @Test func twoByteSimpleValuesBelow32AreNotWellFormed() {
        #expect(throws: CBORError.invalidSimpleValue(offset: 0, value: 20)) { try CBORDecoder.decode(hex("f814")) }
    }

    @Test func nestingDeeperThanTheLimitIsRejected() {
        let deep = [UInt8](repeating: 0x81, count: 10_000) + [0x00]
        #expect(throws: CBORError.depthLimitExceeded(limit: 32)) { try CBORDecoder.decode(deep) }
        let indefinite = [UInt8](repeating: 0x9F, count: 10_000)
        #expect(throws: CBORError.depthLimitExceeded(limit: 32)) { try CBORDecoder.decode(indefinite) }
        let tags = [UInt8](repeating: 0xC1, count: 100) + [0x00]
        #expect(throws: CBORError.depthLimitExceeded(limit: 32)) { try CBORDecoder.decode(tags) }
        #expect(throws: Never.self) { try CBORDecoder.decode([UInt8](repeating: 0x81, count: 32) + [0x00]) }
    }

    @Test func itemCountsAreBounded() {
        let manyItems = hex("9a00010000") + [UInt8](repeating: 0, count: 65536)
        #expect(throws: CBORError.itemLimitExceeded(limit: 65536)) { try CBORDecoder.decode(manyItems) }
        #expect(throws: Never.self) { try CBORDecoder.decode(manyItems, limits: CBORLimits(maxItems: 65537)) }
    }

    @Test func declaredLengthsBeyondTheInputAllocateNothing() {
        // 2^64-1 elements, entries and bytes declared in a few bytes: refused before allocating.
        #expect(throws: CBORError.lengthExceedsInput(offset: 0, declared: .max)) { try CBORDecoder.decode(hex("9bffffffffffffffff00")) }
        #expect(throws: CBORError.lengthExceedsInput(offset: 0, declared: .max)) { try CBORDecoder.decode(hex("bbffffffffffffffff0000")) }
        #expect(throws: CBORError.lengthExceedsInput(offset: 0, declared: .max)) { try CBORDecoder.decode(hex("5bffffffffffffffff00")) }
        #expect(throws: CBORError.lengthExceedsInput(offset: 0, declared: 3)) { try CBORDecoder.decode(hex("a3010203")) }
    }

    @Test func duplicateMapKeysAreRejected() {
        #expect(throws: CBORError.duplicateKey(offset: 4)) { try CBORDecoder.decode(hex("a2616101616102")) }
        #expect(throws: CBORError.duplicateKey(offset: 3)) { try CBORDecoder.decode(hex("a2010201 03".replacingSpaces())) }
    }

    @Test func trailingBytesAfterTheItemAreRejected() {
        #expect(throws: CBORError.trailingBytes(offset: 1)) { try CBORDecoder.decode(hex("0000")) }
    }

    @Test func arbitraryValuesRoundTrip() throws {
        let values: [CBORValue] = [
            .unsigned(.max), .negative(.max), .int(-5), .bytes([]), .bytes(Array(0...255)), .text(""),
            .text(String(repeating: "ü", count: 40_000)), .array([]), .array([.null, .undefined, .bool(true), .simple(99)]),
            .map(CBORMap([(.text("a"), .array([.unsigned(1)])), (.unsigned(2), .map(CBORMap()))])),
            .tagged(55_799, .text("self-describe")), .float(1.5), .float(-.infinity),
        ]
        for value in values { #expect(try CBORDecoder.decode(encoded(value)) == value) }
    }
}

extension String {
    func replacingSpaces() -> String { String(filter { $0 != " " }) }
}
