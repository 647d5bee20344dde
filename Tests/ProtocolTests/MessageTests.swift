import Testing
@testable import TetherProtocol

@Suite struct MessageTests {
    @Test func everyKnownNonDataKindHasASampleMessage() {
        for kind in FrameKind.known where !kind.isData {
            #expect(Samples.kindsCovered.contains(kind), "no sample message of kind \(kind)")
        }
    }

    @Test func everyMessageRoundTrips() throws {
        for message in Samples.messages {
            #expect(try roundTrips(message), "\(message)")
        }
    }

    @Test func messagesRoundTripThroughFramesAtEverySplitPoint() throws {
        for message in Samples.messages {
            var encoder = FrameEncoder()
            func append<M: Message>(_ m: M) { encoder.append(id: 42, flags: .start, m) }
            append(message)
            let bytes = encoder.withPendingBytes { Array($0) }
            for split in 0...bytes.count {
                var decoder = FrameDecoder()
                decoder.append(bytes[0..<split])
                var frame = try decoder.next()
                decoder.append(bytes[split...])
                if frame == nil { frame = try decoder.next() }
                let f = try #require(frame)
                #expect(f.id == 42 && f.flags == .start && f.kind == type(of: message).kind)
                func same<M: Message>(_ m: M) throws -> Bool { try f.decode(M.self) == m }
                #expect(try same(message))
            }
        }
    }

    @Test func unknownKeysAreIgnored() throws {
        let payload = hex("a3656e6f6e63650766667574757265830102036 36e6577a0".replacingSpaces())  // {nonce: 7, future: [1,2,3], new: {}}
        #expect(try Ping(cbor: payload) == Ping(nonce: 7))
    }

    @Test func missingOptionalKeysTakeDefaults() throws {
        let exec = try ExecRequest(cbor: hex("a16461726776816474727565"))  // {"argv": ["true"]}
        #expect(exec == ExecRequest(argv: ["true"]))
        #expect(exec.stdin == .none && exec.killGraceMs == 2000 && exec.drainMs == 250 && !exec.detach)
    }

    @Test func aMissingRequiredKeyIsNamed() {
        #expect(throws: MessageError.missingKey("argv")) { try ExecRequest(cbor: hex("a0")) }
        #expect(throws: MessageError.missingKey("nonce")) { try Ping(cbor: hex("a0")) }
        // A required key sent as null is missing.
        #expect(throws: MessageError.missingKey("pid")) { try Started(cbor: hex("a163706964f6")) }
        // Inside a nested map the path is named.
        #expect(throws: MessageError.missingKey("tty.cols")) {
            try ExecRequest(cbor: hex("a2646172677681617863747479a164726f777318")  + [24])
        }
    }

    @Test func aKeyOfTheWrongTypeIsNamed() {
        #expect(throws: MessageError.wrongType(key: "nonce", expected: "an integer", found: "text string")) {
            try Ping(cbor: hex("a1656e6f6e63656131"))
        }
        #expect(throws: MessageError.wrongType(key: "argv", expected: "an array of strings", found: "text string")) {
            try ExecRequest(cbor: hex("a1646172677663736820"))
        }
        #expect(throws: MessageError.wrongType(key: "argv", expected: "a text or byte string", found: "integer")) {
            try ExecRequest(cbor: hex("a16461726776810 1".replacingSpaces()))
        }
        #expect(throws: MessageError.wrongType(key: "detach", expected: "a bool", found: "integer")) {
            try ExecRequest(cbor: hex("a2646172677681617866646574616368 01".replacingSpaces()))
        }
    }

    @Test func outOfRangeIntegersAreInvalidValues() {
        // pid is Int32: 2^32 does not fit.
        #expect(throws: MessageError.invalidValue(key: "pid", reason: "4294967296 is out of range for Int32")) {
            try Started(cbor: hex("a163706964 1b0000000100000000".replacingSpaces()))
        }
        // A negative byte count.
        #expect(throws: MessageError.invalidValue(key: "bytes", reason: "-1-0 is out of range for UInt64")) {
            try Ack(cbor: hex("a165627974657320"))
        }
        #expect(throws: MessageError.invalidValue(key: "number", reason: "0 is not a signal number (1-64)")) {
            try SignalRequest(cbor: hex("a1666e756d62657200"))
        }
        #expect(throws: MessageError.invalidValue(key: "stdin", reason: "must be \"none\" or \"pipe\", not \"file\"")) {
            try ExecRequest(cbor: hex("a2646172677681617865737464696e6466696c65"))
        }
    }

    @Test func aPayloadThatIsNotAMapIsRejected() {
        #expect(throws: MessageError.notAMap(found: "array")) { try Done(cbor: hex("80")) }
        #expect(throws: MessageError.cbor(.truncated(offset: 0))) { try Done(cbor: []) }
        #expect(throws: MessageError.cbor(.trailingBytes(offset: 1))) { try Done(cbor: hex("a0a0")) }
    }

    @Test func nonUTF8ArgumentsTravelAsByteStrings() throws {
        let name = OSString(bytes: [0x63, 0x61, 0x66, 0xE9])  // "caf\xe9", Latin-1
        let request = ExecRequest(argv: ["ls", name])
        let value = try CBORDecoder.decode(request.cborBytes)
        guard case .map(let map) = value, case .array(let argv)? = map["argv"] else {
            Issue.record("argv is not an array")
            return
        }
        #expect(argv == [.text("ls"), .bytes([0x63, 0x61, 0x66, 0xE9])])
        #expect(try ExecRequest(cbor: request.cborBytes).argv == ["ls", name])
    }

    @Test func anUnknownSeccompProfileIsNamed() {
        // {"argv": ["x"], "seccomp": "strict"}
        #expect(throws: MessageError.invalidValue(key: "seccomp", reason: "must be \"default\", \"restricted\" or \"none\", not \"strict\"")) {
            try ExecRequest(cbor: hex("a2646172677681617867736563636f6d706673747269637 4".replacingSpaces()))
        }
    }

    @Test func rlimitsAcceptNullAsUnlimited() throws {
        let request = ExecRequest(argv: ["x"], rlimits: ["core": ResourceLimit(soft: nil, hard: nil)])
        #expect(try ExecRequest(cbor: request.cborBytes).rlimits["core"] == ResourceLimit(soft: nil, hard: nil))
    }

    @Test func exitedNeedsACodeOrASignal() {
        #expect(throws: MessageError.missingKey("code")) { try Exited(cbor: hex("a0")) }
        #expect(Exited.signal(9).shellStatus == 137)
        #expect(Exited.code(3).shellStatus == 3)
    }

    @Test func errorMessagesReadWell() {
        #expect(MessageError.wrongType(key: "tty.rows", expected: "an integer", found: "text string").description
                == "key 'tty.rows' must be an integer, found text string")
    }
}

@Suite struct AddressTests {
    @Test func parsesEveryScheme() throws {
        #expect(try Address(parsing: "vsock:2695") == .vsock(cid: nil, port: 2695))
        #expect(try Address(parsing: "vsock:3:2695") == .vsock(cid: 3, port: 2695))
        #expect(try Address(parsing: "unix:/run/tether.sock") == .unix(path: "/run/tether.sock"))
        #expect(try Address(parsing: "fd:3") == .fd(3))
        #expect(try Address(parsing: "hvsock:/tmp/v.sock:1024") == .hvsock(path: "/tmp/v.sock", port: 1024))
        for text in ["vsock:2695", "vsock:3:2695", "unix:/a b", "fd:0", "hvsock:/x:y:9"] {
            #expect(try Address(parsing: text).description == text)
        }
    }

    @Test func rejectsMalformedAddresses() {
        #expect(throws: Address.ParseError.unknownScheme("tcp")) { try Address(parsing: "tcp:1") }
        for bad in ["vsock:", "vsock:x", "vsock:1:2:3", "unix:", "fd:-1", "fd:x", "hvsock:/p", "hvsock::5", "nocolon",
                    "unix:/" + String(repeating: "a", count: 120)] {
            #expect(throws: Address.ParseError.self, "\(bad)") { try Address(parsing: bad) }
        }
    }
}
