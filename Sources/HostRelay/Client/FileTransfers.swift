import TetherPosix
import TetherProtocol

/// A file being read: `info` (its attributes when the read began), then its bytes in chunks
/// from `next()` as they arrive, each acknowledged as it is taken (so a slow reader slows the
/// agent, which holds no more than the window). The SHA-256 of what arrived is checked against
/// the agent's at the end; `result` has both once `next()` returned nil.
public final class FileReadStream: AsyncSequence, @unchecked Sendable {
    public typealias Element = [UInt8]
    /// The file's attributes when the read began (nil for an archive).
    public let info: FsInfo?
    let channel: SessionChannel
    private let path: String
    /// Touched only by the one task that reads (like an iterator).
    private var hasher = SHA256()
    private var received: UInt64 = 0
    public private(set) var result: FileTransferResult?

    init(channel: SessionChannel, info: FsInfo?, path: String) {
        self.channel = channel
        self.info = info
        self.path = path
    }

    /// The next chunk; nil after the last one, once the checksum matched.
    public func next() async throws(FileError) -> [UInt8]? {
        while true {
            let item: ChannelItem?
            do { item = try await channel.next() } catch { throw .client(error) }
            guard let item else {
                if case .failed(let error)? = channel.end { throw .client(error) }
                if result == nil {
                    throw .client(TetherError(.protocolError, "the read of \(path) ended without fsDone", operation: "read"))
                }
                return nil
            }
            switch item {
            case .event(.stdout(let bytes)):
                hasher.update(bytes)
                received += UInt64(bytes.count)
                return bytes
            case .reply(let frame):
                try Files.throwIfFailed(frame, op: "read")
                guard frame.kind == .fsDone, let done = try? frame.decode(FsDone.self) else { continue }
                let digest = hasher.finish()
                guard done.bytes == received, done.sha256 == digest else {
                    throw FileError.local(.checksumMismatch, op: "read", path: path,
                                          "received \(received) bytes with sha256 \(SHA256.hex(digest)); the agent sent "
                                          + "\(done.bytes ?? 0) with \(done.sha256.map(SHA256.hex) ?? "none")")
                }
                result = FileTransferResult(bytes: received, sha256: digest)
            default:
                continue
            }
        }
    }

    /// Stops the read; the agent closes the file.
    public func cancel() {
        channel.connection.send(Frame(id: channel.id, kind: .kill, payload: KillRequest().cborBytes), for: channel)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: FileReadStream
        public mutating func next() async throws -> [UInt8]? { try await stream.next() }
    }
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: self) }
}

/// A watch: batches of events as the agent reports them, until `cancel()`.
public final class FileWatchStream: AsyncSequence, @unchecked Sendable {
    public typealias Element = FileEvent
    let channel: SessionChannel
    private let path: String
    /// Events of the last batch not yet taken (one reading task).
    private var pending: [FileEvent] = []

    init(channel: SessionChannel, path: String) {
        self.channel = channel
        self.path = path
    }

    /// The next event; nil once the watch ended (cancelled, or the watched path went away).
    public func next() async throws(FileError) -> FileEvent? {
        while pending.isEmpty {
            let item: ChannelItem?
            do { item = try await channel.next() } catch { throw .client(error) }
            guard let item else {
                if case .failed(let error)? = channel.end { throw .client(error) }
                return nil
            }
            guard case .reply(let frame) = item else { continue }
            try Files.throwIfFailed(frame, op: "watch")
            if frame.kind == .fsEvents, let batch = try? frame.decode(FsEvents.self) { pending = batch.events }
        }
        return pending.removeFirst()
    }

    /// Ends the watch; `next()` returns nil after the events already sent.
    public func cancel() {
        channel.connection.send(Frame(id: channel.id, kind: .kill, payload: KillRequest().cborBytes), for: channel)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: FileWatchStream
        public mutating func next() async throws -> FileEvent? { try await stream.next() }
    }
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: self) }
}

extension Files {
    /// Streams a file (or `length` bytes of it from `offset`); fails before any byte when the
    /// file is larger than `limit`.
    public func readStream(_ path: String, offset: UInt64 = 0, length: UInt64? = nil, limit: UInt64? = nil)
        async throws(FileError) -> FileReadStream {
        let outcome = await Self.retrying(client.options, op: "read") { () async throws(FileError) -> FileReadStream in
            let channel = try await open(FsRead(fileScope(path), offset: offset, length: length, limit: limit), op: "read", path: path)
            channel.widenOutputWindow()
            let item: ChannelItem?
            do throws(TetherError) { item = try await channel.next() } catch { throw .client(error) }
            if case .failed(let error)? = channel.end, item == nil { throw .client(error) }
            guard case .reply(let frame)? = item else {
                throw .client(TetherError(.protocolError, "expected fsInfo first", operation: "read", context: ["path": path]))
            }
            try Self.throwIfFailed(frame, op: "read")
            return FileReadStream(channel: channel, info: try decode(FsInfo.self, frame, op: "read", path: path), path: path)
        }
        return try outcome.get()
    }

    /// A whole file in memory (for small files; `readStream` for large ones).
    public func read(_ path: String, limit: UInt64? = nil) async throws(FileError) -> [UInt8] {
        let stream = try await readStream(path, limit: limit)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(clamping: stream.info?.size ?? 0))
        while let chunk = try await stream.next() { bytes += chunk }
        return bytes
    }

    /// Writes `data` to `path`, atomically unless `append` or `offset` say otherwise; the
    /// agent checks the bytes against their SHA-256 before putting the file in place.
    @discardableResult
    public func write(_ path: String, _ data: [UInt8], _ options: FileWriteOptions = FileWriteOptions()) async throws(FileError)
        -> FileTransferResult {
        let digest = SHA256.hash(data)
        var offset = 0
        return try await write(path, options, sha256: digest) { () async throws(FileError) -> [UInt8]? in
            guard offset < data.count else { return nil }
            let end = min(data.count, offset + Frame.maxDataPayloadBytes)
            defer { offset = end }
            return Array(data[offset..<end])
        }
    }

    /// Writes what `contents` yields. The agent hashes the bytes as they arrive and the result
    /// is compared with the client's own hash; a sequence that throws cancels the write (the
    /// old file stays).
    @discardableResult
    public func write<S: AsyncSequence & Sendable>(_ path: String, contents: S, _ options: FileWriteOptions = FileWriteOptions())
        async throws(FileError) -> FileTransferResult where S.Element == [UInt8] {
        var iterator = contents.makeAsyncIterator()
        return try await write(path, options, sha256: nil) { () async throws(FileError) -> [UInt8]? in
            do { return try await iterator.next() } catch {
                throw .client(TetherError(.cancelled, "the bytes to write failed: \(error)", operation: "write", context: ["path": path]))
            }
        }
    }

    /// The write session: chunks from `nextChunk` within the agent's window, END, then the
    /// agent's `fsDone` (or `fsError`).
    func write(_ path: String, _ options: FileWriteOptions, sha256: [UInt8]?, nextChunk: () async throws(FileError) -> [UInt8]?)
        async throws(FileError) -> FileTransferResult {
        let request = FsWrite(fileScope(path), mode: options.mode, uid: options.uid, gid: options.gid, parents: options.parents,
                              ifAbsent: options.ifAbsent, append: options.append, offset: options.offset, sha256: sha256,
                              limit: options.limit)
        return try await upload(request, op: "write", path: path, nextChunk: nextChunk)
    }

    /// An upload session (`fsWrite`, `fsExtract`): chunks within the agent's window, END, then
    /// `fsDone`, whose byte count and SHA-256 must be what was sent.
    func upload<M: Message>(_ request: M, op: String, path: String, nextChunk: () async throws(FileError) -> [UInt8]?)
        async throws(FileError) -> FileTransferResult {
        let channel = try await open(request, op: op, path: path)
        var hasher = SHA256()
        var sent: UInt64 = 0
        do throws(FileError) {
            while let chunk = try await nextChunk() {
                guard !chunk.isEmpty else { continue }
                do { try await channel.writeStdin(chunk) } catch {
                    // The agent ended the write early (its fsError is waiting) or the link went.
                    try await finalReply(channel, path: path)
                    throw FileError.client(error)
                }
                hasher.update(chunk)
                sent += UInt64(chunk.count)
            }
            do { try channel.closeStdin() } catch { throw FileError.client(error) }
        } catch {
            cancel(channel)
            throw error
        }
        let done = try await finalReply(channel, path: path)
        let digest = hasher.finish()
        guard let done, done.bytes == sent, done.sha256 == digest else {
            throw FileError.local(.checksumMismatch, op: op, path: path,
                                  "sent \(sent) bytes with sha256 \(SHA256.hex(digest)); the agent wrote \(done?.bytes ?? 0)")
        }
        return FileTransferResult(bytes: sent, sha256: digest)
    }

    /// Reads the session to its end: `fsDone` (nil if the session ended without one) or the
    /// `fsError` thrown.
    @discardableResult
    private func finalReply(_ channel: SessionChannel, path: String) async throws(FileError) -> FsDone? {
        var done: FsDone?
        while true {
            let item: ChannelItem?
            do throws(TetherError) { item = try await channel.next() } catch { throw .client(error) }
            guard let item else { break }
            guard case .reply(let frame) = item else { continue }
            try Self.throwIfFailed(frame, op: "write")
            if frame.kind == .fsDone { done = try? frame.decode(FsDone.self) }
        }
        if case .failed(let error)? = channel.end { throw .client(error) }
        return done
    }

    private func cancel(_ channel: SessionChannel) {
        channel.connection.send(Frame(id: channel.id, kind: .kill, payload: KillRequest().cborBytes), for: channel)
    }

    /// Everything below the directory `path` as a tar stream (ustar, pax for long names).
    public func archive(_ path: String) async throws(FileError) -> FileReadStream {
        let channel = try await open(FsArchive(fileScope(path)), op: "archive", path: path)
        return FileReadStream(channel: channel, info: nil, path: path)
    }

    /// Unpacks the tar stream `contents` below the directory `path` (made if missing); with
    /// `owners`, entries keep the archive's uid and gid.
    @discardableResult
    public func extract<S: AsyncSequence & Sendable>(_ path: String, contents: S, owners: Bool = false) async throws(FileError)
        -> FileTransferResult where S.Element == [UInt8] {
        var iterator = contents.makeAsyncIterator()
        return try await upload(FsExtract(fileScope(path), owners: owners), op: "extract", path: path) { () async throws(FileError) -> [UInt8]? in
            do { return try await iterator.next() } catch {
                throw .client(TetherError(.cancelled, "the archive to extract failed: \(error)", operation: "extract", context: ["path": path]))
            }
        }
    }

    /// Events below `path` until the stream is cancelled.
    public func watch(_ path: String, recursive: Bool = false, exclude: [String] = []) async throws(FileError) -> FileWatchStream {
        let channel = try await open(FsWatch(fileScope(path), recursive: recursive, exclude: exclude), op: "watch", path: path)
        return FileWatchStream(channel: channel, path: path)
    }
}
