import Testing
import TetherPosix

/// SHA-256 of the files subsystem, on the CPU's SHA extensions where there are some and in Swift.
struct SHA256Tests {
    @Test func sha256MatchesTheStandardsVectorsWhateverTheSplit() {
        #expect(SHA256.hex(SHA256.hash([])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(SHA256.hash(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(SHA256.hex(SHA256.hash(long)) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        var portableMillion = SHA256(portable: true)
        portableMillion.update(million)
        #expect(SHA256.hex(portableMillion.finish()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        #expect(SHA256.hex(SHA256.hash(million)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        // Fed in pieces of every size from 1 to 130 bytes: the same digest.
        let bytes = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let whole = SHA256.hash(bytes)
        var portable = SHA256(portable: true)
        portable.update(bytes)
        #expect(portable.finish() == whole, "the CPU's compression and the Swift one agree")
        for step in 1...130 {
            var hasher = SHA256()
            var offset = 0
            while offset < bytes.count {
                hasher.update(Array(bytes[offset..<min(bytes.count, offset + step)]))
                offset += step
            }
            #expect(hasher.finish() == whole, "pieces of \(step)")
        }
    }

}
