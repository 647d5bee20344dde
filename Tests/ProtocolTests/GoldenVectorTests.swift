import Foundation
import Testing
@testable import TetherProtocol

/// The golden vectors in `Golden/KIND.json` (docs/PROTOCOL.md, "Golden vectors"): whole frames
/// as hex beside their meaning, checked both ways. The Python client's tests check the same
/// files, so the two implementations agree byte for byte on every kind.
@Suite struct GoldenVectorTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden")

    /// The message type of every kind that carries a CBOR map.
    static let messageTypes: [FrameKind: any Message.Type] = [
        .hello: Hello.self, .error: ErrorMessage.self, .ping: Ping.self, .pong: Pong.self, .shutdown: Shutdown.self,
        .exec: ExecRequest.self, .started: Started.self, .stdinError: StdinError.self, .exited: Exited.self,
        .done: Done.self, .failed: Failed.self, .resize: Resize.self, .signal: SignalRequest.self,
        .kill: KillRequest.self, .ack: Ack.self,
        .listSessions: ListSessions.self, .sessionList: SessionList.self, .attach: Attach.self,
        .attached: Attached.self, .detach: Detach.self, .detached: Detached.self,
        .logs: LogsRequest.self, .signalSession: SignalSession.self,
        .processStart: ProcessStart.self, .processReady: ProcessReady.self, .processFailed: ProcessFailed.self,
        .processList: ProcessList.self, .processTable: ProcessTable.self, .processLogs: ProcessLogs.self,
        .processLogPosition: ProcessLogPosition.self, .processSignal: ProcessSignal.self, .processWait: ProcessWait.self,
        .processEnded: ProcessEnded.self, .processRemove: ProcessRemove.self,
        .fsStat: FsStat.self, .fsInfo: FsInfo.self, .fsList: FsList.self, .fsEntries: FsEntries.self, .fsMkdir: FsMkdir.self,
        .fsRemove: FsRemove.self, .fsRename: FsRename.self, .fsSetattr: FsSetattr.self, .fsRead: FsRead.self,
        .fsWrite: FsWrite.self, .fsArchive: FsArchive.self, .fsExtract: FsExtract.self, .fsWatch: FsWatch.self,
        .fsEvents: FsEvents.self, .fsDone: FsDone.self, .fsError: FsError.self,
        .exposePort: ExposePort.self, .portExposed: PortExposed.self, .unexposePort: UnexposePort.self,
        .listPorts: ListPorts.self, .portList: PortList.self, .tunnelOpen: TunnelOpen.self, .tunnelOpened: TunnelOpened.self,
    ]

    struct Vector: CustomStringConvertible {
        let file: String
        let name: String
        let bytes: [UInt8]
        let id: UInt32
        let flags: FrameFlags
        let kind: FrameKind
        /// The payload's meaning as a CBOR value (maps in the order the file lists their keys),
        /// or the raw bytes of a data frame.
        let payload: CBORValue?
        let data: [UInt8]?
        var description: String { "\(file): \(name)" }
    }

    static func load() throws -> (vectors: [Vector], files: [String: String]) {
        var vectors: [Vector] = []
        var files: [String: String] = [:]
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".json") }.sorted()
        for file in names {
            let text = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            let document = try OrderedJSON.parse(text)
            let kindName = try document.text("kind")
            files[kindName] = file
            guard case .array(let entries)? = document["vectors"] else { throw GoldenError("\(file): no vectors array") }
            for entry in entries {
                let name = try entry.text("name")
                guard let frame = entry["frame"] else { throw GoldenError("\(file) \(name): no frame") }
                guard let kind = FrameKind.known.first(where: { $0.name == (try? frame.text("kind")) }) else {
                    throw GoldenError("\(file) \(name): unknown kind")
                }
                var flags: FrameFlags = []
                if case .array(let names)? = frame["flags"] {
                    for flag in names {
                        switch flag {
                        case .string("start"): flags.insert(.start)
                        case .string("end"): flags.insert(.end)
                        default: throw GoldenError("\(file) \(name): flag \(flag)")
                        }
                    }
                }
                guard case .integer(let id)? = frame["id"], let id32 = UInt32(exactly: id) else { throw GoldenError("\(file) \(name): id") }
                let payload = try frame["payload"].map { try $0.cbor() }
                let data = try frame["data"].map { value -> [UInt8] in
                    guard case .string(let text) = value else { throw GoldenError("\(file) \(name): data is not hex") }
                    return hex(text)
                }
                vectors.append(Vector(file: file, name: name, bytes: hex(try entry.text("hex")), id: id32, flags: flags, kind: kind,
                                      payload: payload, data: data))
            }
        }
        return (vectors, files)
    }

    @Test func everyKindHasAVectorFileNamedAfterIt() throws {
        let (vectors, files) = try Self.load()
        for kind in FrameKind.known {
            let name = try #require(kind.name)
            #expect(files[name] == name + ".json", "no golden vector file for \(kind)")
            #expect(vectors.contains { $0.kind == kind }, "no golden vector for \(kind)")
            if !kind.isData { #expect(Self.messageTypes[kind] != nil, "the test has no message type for \(kind)") }
        }
        for vector in vectors { #expect(vector.file == (vector.kind.name ?? "") + ".json", "\(vector) is filed under another kind") }
    }

    /// bytes -> meaning: the frame decodes to the header the file states, the payload to the
    /// meaning (keys in the same order), and the kind's message type accepts it and writes it
    /// back to the same bytes.
    @Test func bytesDecodeToTheirMeaning() throws {
        for vector in try Self.load().vectors {
            var decoder = FrameDecoder()
            decoder.append(vector.bytes)
            let frame = try #require(try decoder.next(), "\(vector): not one whole frame")
            #expect(decoder.bufferedBytes == 0, "\(vector): bytes after the frame")
            #expect(frame.id == vector.id && frame.flags == vector.flags && frame.kind == vector.kind, "\(vector): header")
            if let data = vector.data {
                #expect(frame.kind.isData && frame.payload == data, "\(vector): data")
                continue
            }
            let meaning = try #require(vector.payload)
            #expect(try CBORDecoder.decode(frame.payload) == meaning, "\(vector): payload")
            let type = try #require(Self.messageTypes[vector.kind])
            func roundTrip<M: Message>(_ type: M.Type) throws -> [UInt8] { try frame.decode(M.self).cborBytes }
            #expect(try roundTrip(type) == frame.payload, "\(vector): the \(type) decoded from it encodes differently")
        }
    }

    /// meaning -> bytes: the kind's message type, read from the meaning, encodes to exactly the
    /// file's bytes (key order, integer widths, left-out optional keys and all).
    @Test func meaningsEncodeToTheirBytes() throws {
        for vector in try Self.load().vectors {
            let payload: [UInt8]
            if let data = vector.data {
                payload = data
            } else {
                guard case .map(let map)? = vector.payload else { Issue.record("\(vector): the payload is not a map"); continue }
                let type = try #require(Self.messageTypes[vector.kind])
                func typed<M: Message>(_ type: M.Type) throws -> [UInt8] { try M(from: MessageReader(map)).cborBytes }
                payload = try typed(type)
                var writer = CBORWriter()
                writer.value(.map(map))
                #expect(writer.bytes == payload, "\(vector): a plain CBOR encoding of the meaning differs from \(type)'s")
            }
            var encoder = FrameEncoder()
            encoder.append(Frame(id: vector.id, flags: vector.flags, kind: vector.kind, payload: payload))
            let bytes = encoder.withPendingBytes { Array($0) }
            #expect(bytes == vector.bytes, "\(vector): encodes to \(bytes.map { String(format: "%02x", $0) }.joined())")
        }
    }
}

struct GoldenError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// JSON as the golden files need it: objects keep their key order (CBOR maps are ordered on
/// the wire), integers stay exact up to 2^64-1, and `{"$bytes": HEX}` (or a key `$bytes:HEX`)
/// stands for a CBOR byte string. Foundation's JSONSerialization keeps neither order nor
/// the difference between 1 and true on every platform.
indirect enum OrderedJSON: Equatable, CustomStringConvertible {
    case object([(String, OrderedJSON)])
    case array([OrderedJSON])
    case string(String)
    case integer(Int128)
    case bool(Bool)
    case null

    static func == (a: OrderedJSON, b: OrderedJSON) -> Bool { a.description == b.description }

    var description: String {
        switch self {
        case .object(let members): "{" + members.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
        case .array(let items): "[" + items.map(\.description).joined(separator: ", ") + "]"
        case .string(let s): "\"\(s)\""
        case .integer(let n): String(n)
        case .bool(let b): String(b)
        case .null: "null"
        }
    }

    subscript(key: String) -> OrderedJSON? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.0 == key }?.1
    }

    func text(_ key: String) throws -> String {
        guard case .string(let text)? = self[key] else { throw GoldenError("no text '\(key)' in \(self)") }
        return text
    }

    func cbor() throws -> CBORValue {
        switch self {
        case .object(let members):
            if members.count == 1, members[0].0 == "$bytes", case .string(let h) = members[0].1 { return .bytes(hex(h)) }
            return .map(CBORMap(try members.map { key, value throws -> (key: CBORValue, value: CBORValue) in
                let cborKey: CBORValue = key.hasPrefix("$bytes:") ? .bytes(hex(String(key.dropFirst(7)))) : .text(key)
                return (key: cborKey, value: try value.cbor())
            }))
        case .array(let items): return .array(try items.map { try $0.cbor() })
        case .string(let s): return .text(s)
        case .integer(let n):
            if n >= 0, let u = UInt64(exactly: n) { return .unsigned(u) }
            guard let magnitude = UInt64(exactly: -1 - n) else { throw GoldenError("\(n) does not fit CBOR") }
            return .negative(magnitude)
        case .bool(let b): return .bool(b)
        case .null: return .null
        }
    }

    static func parse(_ text: String) throws -> OrderedJSON {
        var parser = Parser(scalars: Array(text.unicodeScalars))
        let value = try parser.value()
        parser.skipSpace()
        guard parser.at == parser.scalars.count else { throw GoldenError("JSON: text after the value at \(parser.at)") }
        return value
    }

    struct Parser {
        let scalars: [Unicode.Scalar]
        var at = 0

        mutating func skipSpace() { while at < scalars.count, " \n\r\t".unicodeScalars.contains(scalars[at]) { at += 1 } }

        mutating func expect(_ literal: String) throws {
            for scalar in literal.unicodeScalars {
                guard at < scalars.count, scalars[at] == scalar else { throw GoldenError("JSON: expected \(literal) at \(at)") }
                at += 1
            }
        }

        mutating func value() throws -> OrderedJSON {
            skipSpace()
            guard at < scalars.count else { throw GoldenError("JSON: unexpected end") }
            switch scalars[at] {
            case "{":
                at += 1
                var members: [(String, OrderedJSON)] = []
                skipSpace()
                if scalars[at] == "}" { at += 1; return .object(members) }
                while true {
                    skipSpace()
                    let key = try string()
                    skipSpace()
                    try expect(":")
                    members.append((key, try value()))
                    skipSpace()
                    if scalars[at] == "," { at += 1; continue }
                    try expect("}")
                    return .object(members)
                }
            case "[":
                at += 1
                var items: [OrderedJSON] = []
                skipSpace()
                if scalars[at] == "]" { at += 1; return .array(items) }
                while true {
                    items.append(try value())
                    skipSpace()
                    if scalars[at] == "," { at += 1; continue }
                    try expect("]")
                    return .array(items)
                }
            case "\"": return .string(try string())
            case "t": try expect("true"); return .bool(true)
            case "f": try expect("false"); return .bool(false)
            case "n": try expect("null"); return .null
            default:
                let start = at
                if scalars[at] == "-" { at += 1 }
                while at < scalars.count, ("0"..."9").contains(scalars[at]) { at += 1 }
                var digits = ""
                digits.unicodeScalars.append(contentsOf: scalars[start..<at])
                guard let n = Int128(digits) else { throw GoldenError("JSON: only integers are expected, at \(start)") }
                return .integer(n)
            }
        }

        mutating func string() throws -> String {
            try expect("\"")
            var out = String.UnicodeScalarView()
            while at < scalars.count, scalars[at] != "\"" {
                if scalars[at] == "\\" {
                    at += 1
                    switch scalars[at] {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    case "r": out.append("\r")
                    case "b": out.append("\u{8}")
                    case "f": out.append("\u{C}")
                    case "u":
                        var code = UInt32(try hex4())
                        if (0xD800..<0xDC00).contains(code) {
                            try expect("\\u")
                            at -= 1
                            let low = UInt32(try hex4())
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let scalar = Unicode.Scalar(code) else { throw GoldenError("JSON: bad \\u escape") }
                        out.append(scalar)
                        continue
                    default: out.append(scalars[at])
                    }
                    at += 1
                } else {
                    out.append(scalars[at])
                    at += 1
                }
            }
            try expect("\"")
            return String(out)
        }

        /// The four hex digits after `\u` (at points at the `u`).
        mutating func hex4() throws -> UInt16 {
            at += 1
            guard at + 4 <= scalars.count else { throw GoldenError("JSON: short \\u escape") }
            var text = ""
            text.unicodeScalars.append(contentsOf: scalars[at..<(at + 4)])
            at += 4
            guard let value = UInt16(text, radix: 16) else { throw GoldenError("JSON: bad \\u escape") }
            return value
        }
    }
}
