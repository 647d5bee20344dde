// libFuzzer target: what the files subsystem reads from a peer. The first byte picks the input's
// type (modulo the count): one of the fs message decoders (a message that decodes must re-encode
// to bytes that decode to an equal message), or the tar reader of fsExtract and `tether cp`,
// fed in pieces whose size the second byte picks. Checked beyond "no trap": the reader never
// hands out more data for an entry than its header announced, nor data outside a file entry.

let messageChecks: [([UInt8]) -> Void] = [
    { check(FsStat.self, $0) }, { check(FsInfo.self, $0) }, { check(FsList.self, $0) }, { check(FsEntries.self, $0) },
    { check(FsMkdir.self, $0) }, { check(FsRemove.self, $0) }, { check(FsRename.self, $0) }, { check(FsSetattr.self, $0) },
    { check(FsRead.self, $0) }, { check(FsWrite.self, $0) }, { check(FsArchive.self, $0) }, { check(FsExtract.self, $0) },
    { check(FsWatch.self, $0) }, { check(FsEvents.self, $0) }, { check(FsDone.self, $0) }, { check(FsError.self, $0) },
]

func check<M: Message>(_ type: M.Type, _ payload: [UInt8]) {
    guard let message = try? M(cbor: payload) else { return }
    guard let again = try? M(cbor: message.cborBytes), again == message else {
        fatalError("\(M.self) does not survive re-encoding")
    }
}

func checkTar(_ input: [UInt8]) {
    guard let first = input.first else { return }
    let piece = Int(first) * 7 + 1
    var reader = TarReader()
    var current: TarEntry?
    var dataBytes: UInt64 = 0
    var offset = 1
    while offset < input.count {
        let events: [TarReader.Event]
        do { events = try reader.feed(Array(input[offset..<min(input.count, offset + piece)])) } catch { return }
        offset += piece
        for event in events {
            switch event {
            case .entry(let entry):
                current = entry
                dataBytes = 0
            case .data(let bytes):
                guard let entry = current, entry.type == .file else { fatalError("data outside a file entry") }
                dataBytes += UInt64(bytes.count)
                if dataBytes > entry.size { fatalError("\(dataBytes) bytes of data for an entry of \(entry.size)") }
            case .entryEnd:
                current = nil
            case .end:
                break
            }
        }
    }
    _ = try? reader.finish()
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let choice = Int(input[0]) % (messageChecks.count + 1)
    let rest = Array(input[1...])
    if choice < messageChecks.count { messageChecks[choice](rest) } else { checkTar(rest) }
    return 0
}
