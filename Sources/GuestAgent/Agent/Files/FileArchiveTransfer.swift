#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// `fsArchive`: everything below a directory as one tar stream (`stdout` data within the
/// client's window), then `fsDone{bytes, sha256}`. The walk is pre-order and lazy: the agent
/// holds the open directories of the current path, one open file and at most a header or a
/// block of padding, never the tree or a file. Symlinks are archived as links, not followed;
/// sockets, fifos and devices are left out. A file that shrinks while it is read is padded
/// with zeros to the size its header announced (as tar(1) does), so the stream stays whole.
///
/// Owns its open directories and file. Lives on the loop thread.
final class FileArchiveTransfer: FileTransfer {
    private let id: UInt32
    private let link: FramedConnection
    private let root: FilePath
    private let identity: FileIdentity
    private let user: ResolvedUser?
    private let onEnd: () -> Void
    private var stack: [(dir: OpaquePointer, relative: [UInt8])] = []
    private var pending: [UInt8] = []
    private var pendingOffset = 0
    private var file: (fd: CInt, remaining: UInt64, size: UInt64, offset: UInt64, name: [UInt8])?
    private var trailerQueued = false
    private var ended = false
    private var window = FlowControl.initialWindowBytes
    private var hasher = SHA256()
    private var sent: UInt64 = 0

    init(id: UInt32, link: FramedConnection, root: FilePath, identity: FileIdentity, user: ResolvedUser?,
         onEnd: @escaping () -> Void) throws(FileFailure) {
        self.id = id
        self.link = link
        self.root = root
        self.identity = identity
        self.user = user
        self.onEnd = onEnd
        let dir = try identity.run(as: user) { () throws(FileFailure) in
            try FileOperations.openDirectory(root.c, follow: true, path: root.given)
        }
        stack = [(dir, [])]
    }

    deinit { release() }

    private func release() {
        for level in stack { closedir(level.dir) }
        stack.removeAll()
        if let file { close(file.fd) }
        file = nil
    }

    func handle(_ frame: FrameView) throws(RequestError) {
        switch frame.header.kind {
        case .ack:
            window += try decodeAck(frame)
            pump()
        case .kill:
            end(failure: FileFailure(.transferAborted, op: "archive", path: root.given, "the client cancelled the archive"))
        default:
            throw RequestError(.unknownKind, "kind \(frame.header.kind) is not valid on an fsArchive")
        }
    }

    func linkDrained() { pump() }

    func abort() {
        ended = true
        release()
    }

    func pump() {
        do throws(FileFailure) {
            try identity.run(as: user) { () throws(FileFailure) in try step() }
        } catch {
            end(failure: error)
        }
    }

    /// Sends while the window and the link allow: queued header bytes, then the current
    /// file's bytes, then the next entry; the end after the trailer.
    private func step() throws(FileFailure) {
        while !ended && window > 0 && !link.congested {
            if pendingOffset < pending.count {
                let n = min(window, Frame.maxDataPayloadBytes, pending.count - pendingOffset)
                pending.withUnsafeBytes { raw in
                    let slice = UnsafeRawBufferPointer(rebasing: raw[pendingOffset..<(pendingOffset + n)])
                    hasher.update(slice)
                    link.appendData(id: id, kind: .stdout, slice)
                }
                pendingOffset += n
                counted(n)
                if pendingOffset == pending.count {
                    pending.removeAll(keepingCapacity: true)
                    pendingOffset = 0
                }
            } else if let current = file {
                if current.remaining == 0 {
                    close(current.fd)
                    file = nil
                    pending = TarWriter.padding(current.size)
                    continue
                }
                try sendFileBytes(current)
            } else if trailerQueued {
                link.queued()
                ended = true
                release()
                link.send(FsDone(bytes: sent, sha256: hasher.finish()), id: id, flags: .end)
                onEnd()
                return
            } else {
                try nextEntry()
            }
        }
        link.queued()
    }

    private func counted(_ n: Int) {
        window -= n
        sent += UInt64(n)
    }

    private func sendFileBytes(_ current: (fd: CInt, remaining: UInt64, size: UInt64, offset: UInt64, name: [UInt8])) throws(FileFailure) {
        let limit = Int(min(UInt64(min(window, Frame.maxDataPayloadBytes)), current.remaining))
        let n: Int
        switch sendFileChunk(from: current.fd, at: current.offset, limit: limit, id: id, on: link, hashing: &hasher) {
        case .success(let count): n = count
        case .failure(let errno): throw FileFailure(op: "read", path: root.child(current.name).os, errno: errno)
        }
        if n == 0 {
            // Shrunk since its header: zeros for the rest keep the archive readable.
            pending = [UInt8](repeating: 0, count: Int(current.remaining)) + TarWriter.padding(current.size)
            close(current.fd)
            file = nil
            return
        }
        counted(n)
        file = (current.fd, current.remaining - UInt64(n), current.size, current.offset + UInt64(n), current.name)
    }

    /// Queues the next entry's header (opening its file or directory), or the trailer.
    private func nextEntry() throws(FileFailure) {
        while let top = stack.last {
            errno = 0
            guard let entry = readdir(top.dir) else {
                if errno != 0 { throw FileFailure(op: "readdir", path: root.child(top.relative).os, errno: Errno(rawValue: errno)) }
                closedir(stack.removeLast().dir)
                continue
            }
            let name = DirectoryListing.name(of: entry)
            if name == [46] || name == [46, 46] { continue }
            let relative = top.relative.isEmpty ? name : top.relative + [UInt8(ascii: "/")] + name
            let parent = dirfd(top.dir)
            var st = Glibc.stat()
            guard fstatat(parent, name.cString, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }   // gone meanwhile
            var header = TarEntry(name: relative, type: .file, mode: UInt32(st.st_mode) & 0o7777, uid: st.st_uid, gid: st.st_gid,
                                  mtime: Int64(st.st_mtim.tv_sec))
            switch FileOperations.type(of: st.st_mode) {
            case .dir:
                stack.append((try FileOperations.openDirectory(name.cString, in: parent, path: root.child(relative).os), relative))
                header.type = .directory
            case .file:
                let fd = try fileCall("open", root.child(relative).os) { openat(parent, name.cString, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) }
                header.size = UInt64(max(0, st.st_size))
                file = (fd, header.size, header.size, 0, relative)
            case .symlink:
                var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let n = try fileCall("readlink", root.child(relative).os) { readlinkat(parent, name.cString, &buffer, buffer.count - 1) }
                header.type = .symlink
                header.linkName = buffer.prefix(n).map { UInt8(bitPattern: $0) }
            case .other:
                continue
            }
            pending = TarWriter.header(header)
            pendingOffset = 0
            return
        }
        pending = TarWriter.trailer
        pendingOffset = 0
        trailerQueued = true
    }

    private func end(failure: FileFailure) {
        guard !ended else { return }
        abort()
        sendFailure(failure, id: id, on: link)
        onEnd()
    }
}
