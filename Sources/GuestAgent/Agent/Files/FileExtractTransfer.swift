#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// `fsExtract`: a tar stream from the client's `stdin` frames unpacked below a directory as
/// it arrives (each frame acked once written; the agent holds one frame and one header), then
/// `fsDone{bytes, sha256}` after the stream's END. Directories get their modes at the end, so
/// a read-only directory can still be filled. An entry may not leave the directory: absolute
/// names, `..` components and paths through a symlink (one the archive made, or one already
/// there) are refused with `invalidPath`. Unlike `fsWrite` this is not atomic: a cut stream
/// leaves the entries written so far (the file being written is removed).
///
/// Owns the file being written. Lives on the loop thread.
final class FileExtractTransfer: FileTransfer {
    private let id: UInt32
    private let link: FramedConnection
    private let root: FilePath
    private let owners: Bool
    private let identity: FileIdentity
    private let user: ResolvedUser?
    private let onEnd: () -> Void
    private var reader = TarReader()
    private var current: (fd: CInt, entry: TarEntry, path: FilePath)?
    private var directories: [(path: FilePath, entry: TarEntry)] = []
    private var hasher = SHA256()
    private var received: UInt64 = 0

    init(id: UInt32, link: FramedConnection, root: FilePath, owners: Bool, identity: FileIdentity, user: ResolvedUser?,
         onEnd: @escaping () -> Void) throws(FileFailure) {
        self.id = id
        self.link = link
        self.root = root
        self.owners = owners
        self.identity = identity
        self.user = user
        self.onEnd = onEnd
        try identity.run(as: user) { () throws(FileFailure) in try FileOperations.mkdir(root, mode: 0o755, parents: true) }
    }

    deinit { closeCurrent(remove: true) }

    func handle(_ frame: FrameView) throws(RequestError) {
        switch frame.header.kind {
        case .stdin:
            do throws(FileFailure) {
                let bytes = Array(frame.payload)
                hasher.update(bytes)
                received += UInt64(bytes.count)
                let events: [TarReader.Event]
                do { events = try reader.feed(bytes) } catch {
                    throw FileFailure(.invalidArgument, op: "extract", path: root.given, "not a tar stream: \(error)")
                }
                try identity.run(as: user) { () throws(FileFailure) in
                    for event in events { try apply(event) }
                }
                if !bytes.isEmpty { link.send(Ack(bytes: UInt64(bytes.count)), id: id) }
                if frame.header.flags.contains(.end) { try finish() }
            } catch {
                end(failure: error)
            }
        case .ack:
            _ = try decodeAck(frame)
        case .kill:
            end(failure: FileFailure(.transferAborted, op: "extract", path: root.given, "the client cancelled the extraction"))
        default:
            throw RequestError(.unknownKind, "kind \(frame.header.kind) is not valid on an fsExtract")
        }
    }

    func linkDrained() {}

    func abort() { closeCurrent(remove: true) }

    private func closeCurrent(remove: Bool) {
        guard let current else { return }
        close(current.fd)
        if remove { unlink(current.path.c) }
        self.current = nil
    }

    private func apply(_ event: TarReader.Event) throws(FileFailure) {
        switch event {
        case .entry(let entry):
            try start(entry)
        case .data(let bytes):
            guard let current else { return }
            do { try FileIO.writeAll(current.fd, bytes) } catch { throw FileFailure(op: "write", path: current.path.os, errno: error) }
        case .entryEnd:
            guard let current else { return }
            let (fd, entry, path) = current
            try fileCall("chmod", path.os) { fchmod(fd, mode_t(entry.mode)) }
            if owners { try fileCall("chown", path.os) { fchown(fd, entry.uid, entry.gid) } }
            closeCurrent(remove: false)
        case .end:
            break
        }
    }

    /// The entry's path below the root, refused when it would leave the root.
    private func place(_ entry: TarEntry) throws(FileFailure) -> FilePath {
        let components = entry.name.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true)
        let display = OSString(bytes: entry.name)
        guard !components.isEmpty, entry.name.first != UInt8(ascii: "/"),
              !components.contains(where: { $0.elementsEqual([46, 46]) }) else {
            throw FileFailure(.invalidPath, op: "extract", path: display, "the entry '\(display)' would leave \(root.given)")
        }
        var path = root
        for (index, component) in components.enumerated() where !component.elementsEqual([46]) {
            path = path.child(Array(component))
            guard index < components.count - 1 else { break }
            var st = Glibc.stat()
            if lstat(path.c, &st) == 0 && FileOperations.type(of: st.st_mode) == .symlink {
                throw FileFailure(.invalidPath, op: "extract", path: display, "the entry '\(display)' goes through the symlink \(path.os)")
            }
        }
        return path
    }

    private func start(_ entry: TarEntry) throws(FileFailure) {
        closeCurrent(remove: false)
        if entry.name == [46] { return }   // "./" itself
        let path = try place(entry)
        var st = Glibc.stat()
        let exists = lstat(path.c, &st) == 0
        let existingType = exists ? FileOperations.type(of: st.st_mode) : nil
        switch entry.type {
        case .directory:
            if existingType != .dir {
                if exists { try fileCall("unlink", path.os) { unlink(path.c) } }
                try fileCall("mkdir", path.os) { mkdir(path.c, 0o700) }
            }
            directories.append((path, entry))
        case .file:
            if existingType == .dir {
                throw FileFailure(.isDirectory, op: "extract", path: path.os, errno: EISDIR, "\(path.os) is a directory")
            }
            // A symlink is replaced, not followed; so is a FIFO or socket (opening one would block).
            if existingType == .symlink || existingType == .other { try fileCall("unlink", path.os) { unlink(path.c) } }
            let fd = try fileCall("open", path.os) {
                open(path.c, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode_t(0o600))
            }
            current = (fd, entry, path)
        case .symlink:
            if existingType == .dir {
                throw FileFailure(.isDirectory, op: "extract", path: path.os, errno: EISDIR, "\(path.os) is a directory")
            }
            if exists { try fileCall("unlink", path.os) { unlink(path.c) } }
            try fileCall("symlink", path.os) { symlink(entry.linkName.cString, path.c) }
            if owners { try fileCall("chown", path.os) { lchown(path.c, entry.uid, entry.gid) } }
        case .other:
            break
        }
    }

    private func finish() throws(FileFailure) {
        do { try reader.finish() } catch {
            throw FileFailure(.transferAborted, op: "extract", path: root.given, "the tar stream ended inside an entry")
        }
        try identity.run(as: user) { () throws(FileFailure) in
            // Deepest first, so that a directory made read-only does not stop its children.
            for (path, entry) in directories.reversed() {
                if owners { try fileCall("chown", path.os) { lchown(path.c, entry.uid, entry.gid) } }
                try fileCall("chmod", path.os) { chmod(path.c, mode_t(entry.mode)) }
            }
        }
        link.send(FsDone(bytes: received, sha256: hasher.finish()), id: id, flags: .end)
        onEnd()
    }

    private func end(failure: FileFailure) {
        abort()
        sendFailure(failure, id: id, on: link)
        onEnd()
    }
}
