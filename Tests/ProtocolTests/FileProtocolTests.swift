import Testing
import TetherProtocol

/// The pieces of the files subsystem both sides share: tar streams, the messages'
/// checks of what a peer sends.
struct FileProtocolTests {
    @Test func aTarStreamReadsBackEntryForEntryFedAtEveryGranularity() throws {
        let longName = Array(String(repeating: "d", count: 150).utf8) + Array("/file".utf8)
        let entries = [
            (TarEntry(name: Array("dir".utf8), type: .directory, mode: 0o750, uid: 1000, gid: 100, mtime: 1_700_000_000), [UInt8]()),
            (TarEntry(name: Array("dir/a.txt".utf8), type: .file, mode: 0o600, uid: 3_000_000, gid: 5, size: 700, mtime: 5),
             (0..<700).map { UInt8(truncatingIfNeeded: $0) }),
            (TarEntry(name: Array("link".utf8), type: .symlink, mode: 0o777, linkName: Array(String(repeating: "t", count: 140).utf8)), []),
            (TarEntry(name: longName, type: .file, mode: 0o644, size: 512), [UInt8](repeating: 9, count: 512)),
        ]
        var stream: [UInt8] = []
        for (entry, data) in entries { stream += TarWriter.header(entry) + data + TarWriter.padding(UInt64(data.count)) }
        stream += TarWriter.trailer
        for step in [1, 7, 512, 513, 100_000] {
            var reader = TarReader()
            var events: [TarReader.Event] = []
            var offset = 0
            while offset < stream.count {
                events += try reader.feed(Array(stream[offset..<min(stream.count, offset + step)]))
                offset += step
            }
            try reader.finish()
            var read: [(TarEntry, [UInt8])] = []
            for event in events {
                switch event {
                case .entry(let entry): read.append((entry, []))
                case .data(let bytes): read[read.count - 1].1 += bytes
                case .entryEnd, .end: break
                }
            }
            #expect(read.count == entries.count, "step \(step)")
            for (got, want) in zip(read, entries) {
                #expect(got.0 == want.0, "step \(step)")
                #expect(got.1 == want.1, "step \(step)")
            }
            #expect(events.last == .end)
        }
    }

    @Test func aDamagedOrCutTarStreamThrowsInsteadOfGuessing() throws {
        var header = TarWriter.header(TarEntry(name: Array("x".utf8), type: .file, mode: 0o644, size: 10))
        header[0] = UInt8(ascii: "y")   // the checksum no longer matches
        var reader = TarReader()
        #expect(throws: TarError.badChecksum(offset: 0)) { _ = try reader.feed(header) }
        var cut = TarReader()
        _ = try cut.feed(TarWriter.header(TarEntry(name: Array("x".utf8), type: .file, mode: 0o644, size: 10)) + [1, 2, 3])
        #expect(throws: TarError.truncated) { try cut.finish() }
    }

    @Test func fileRequestsRefuseWhatTheyCannotMean() {
        func decodes<M: Message>(_ type: M.Type, _ map: (inout CBORWriter.MapWriter) -> Void) -> Bool {
            var writer = CBORWriter()
            writer.map(map)
            return (try? M(cbor: writer.bytes)) != nil
        }
        #expect(!decodes(FsStat.self) { _ in })                                  // no path
        #expect(!decodes(FsList.self) { $0.entry("path", "/"); $0.entry("limit", UInt64(0)) })
        #expect(!decodes(FsList.self) { $0.entry("path", "/"); $0.entry("limit", UInt64(1 << 20)) })
        #expect(!decodes(FsMkdir.self) { $0.entry("path", "/a"); $0.entry("mode", UInt64(0o17777)) })
        #expect(!decodes(FsWrite.self) { $0.entry("path", "/a"); $0.entry("sha256") { $0.byteString([1, 2]) } })
        #expect(!decodes(FsWrite.self) { $0.entry("path", "/a"); $0.entry("append", true); $0.entry("offset", UInt64(3)) })
        #expect(!decodes(FsRename.self) { $0.entry("from", "/a") })              // no destination
        #expect(decodes(FsWrite.self) { $0.entry("path") { $0.byteString([0x2F, 0xFF]) } })   // a non-UTF-8 name
        let error = FsError(kind: .unrecognized("fromTheFuture"), op: "open", path: "/x")
        #expect((try? FsError(cbor: error.cborBytes))?.kind == .unrecognized("fromTheFuture"))
    }
}
