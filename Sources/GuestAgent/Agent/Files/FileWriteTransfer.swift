#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// `fsWrite`: the client's `stdin` frames are written as they come and acked once written
/// (so the agent holds no more than one frame of a transfer; the window is widened to
/// `FlowControl.uploadWindowBytes` by one ack ahead at the start), and the last one (END) puts the
/// file in place: by default atomically, as a temporary file in the target's directory
/// (O_TMPFILE where the file system has it, else a named `.NAME.tether-PID-N`), fsynced, then
/// renamed over the target, keeping an existing target's mode and owner unless the request
/// gives them. Until then the target is untouched; a transfer cut short (`kill`, the link
/// closing, a checksum that does not match, an error) removes the temporary file.
/// `append` and `offset` write the target in place instead (not atomic).
///
/// Owns the open file and the temporary name. Lives on the loop thread.
final class FileWriteTransfer: FileTransfer {
    /// Numbers temporary names; touched only on the loop thread.
    nonisolated(unsafe) private static var tempCounter = 0

    private let id: UInt32
    private let link: FramedConnection
    private let request: FsWrite
    private let target: FilePath
    private let user: ResolvedUser?
    private let identity: FileIdentity
    /// The file being written (the temporary): closed by `fd = nil` once in place or given up, or when this goes.
    private var fd: OwnedFD?
    /// The named temporary file, while it exists (nil with O_TMPFILE until linked, and in place).
    private var tempName: FilePath?
    private let inPlace: Bool
    /// The target as it was (mode and owner to keep).
    private let existing: Glibc.stat?
    private var hasher = SHA256()
    private var written: UInt64 = 0
    /// The fsync at the end runs on this, the agent's one thread: after a 1 GiB upload it
    /// stalled every other session for 0.24 s when it had the whole file to write. Handing
    /// the pages to the disk as they are written leaves it the last few MiB (and a small guest
    /// keeps less of its memory dirty).
    private var writeback: FileIO.WritebackPacer
    private let onEnd: () -> Void

    init(id: UInt32, link: FramedConnection, request: FsWrite, target: FilePath, user: ResolvedUser?, identity: FileIdentity,
         onEnd: @escaping () -> Void) throws(FileFailure) {
        self.id = id
        self.link = link
        self.request = request
        self.target = target
        self.user = user
        self.identity = identity
        self.onEnd = onEnd
        inPlace = request.append || request.offset != nil
        let directory = target.split.directory
        var opened: CInt = -1
        var named: FilePath?
        existing = try identity.run(as: user) { () throws(FileFailure) -> Glibc.stat? in
            if request.parents { try FileOperations.mkdir(directory, mode: 0o755, parents: true) }
            var st = Glibc.stat()
            let found = stat(target.c, &st) == 0
            if !found && errno != ENOENT { throw FileFailure(op: "stat", path: target.given, errno: Errno(rawValue: errno)) }
            if found && FileOperations.type(of: st.st_mode) == .dir {
                throw FileFailure(.isDirectory, op: "open", path: target.given, errno: EISDIR, "\(target.given) is a directory")
            }
            if found && request.ifAbsent {
                throw FileFailure(.preconditionFailed, op: "open", path: target.given, errno: EEXIST, "\(target.given) exists (ifAbsent)")
            }
            let mode = mode_t(request.mode ?? 0o644)
            if request.append || request.offset != nil {
                if found && FileOperations.type(of: st.st_mode) != .file {
                    throw FileFailure(.invalidArgument, op: "open", path: target.given, "\(target.given) is not a regular file")
                }
                // O_NONBLOCK: a FIFO put there meanwhile must not block the agent's one thread.
                let flags = O_WRONLY | O_CREAT | O_NONBLOCK | O_CLOEXEC | (request.append ? O_APPEND : 0)
                opened = try fileCall("open", target.given) { open(target.c, flags, mode) }
                if let offset = request.offset {
                    try fileCall("lseek", target.given) { lseek(opened, off_t(offset), SEEK_SET) }
                }
                return found ? st : nil
            }
            // Not readable by others while it is being written; the final mode comes at the end.
            let anonymous = open(directory.c, csys_o_tmpfile() | O_WRONLY | O_CLOEXEC, mode_t(0o600))
            if anonymous >= 0 {
                opened = anonymous
            } else if errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL {
                // No O_TMPFILE here (EISDIR: a kernel that reads it as O_DIRECTORY).
                Self.tempCounter += 1
                let name = Array(".\(String(decoding: target.split.name, as: UTF8.self)).tether-\(getpid())-\(Self.tempCounter)".utf8)
                let temp = directory.child(name)
                opened = try fileCall("open", target.given) { open(temp.c, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(0o600)) }
                named = temp
            } else {
                throw FileFailure(op: "open", path: target.given, errno: Errno(rawValue: errno))
            }
            return found ? st : nil
        }
        fd = OwnedFD(adopting: opened)
        writeback = FileIO.WritebackPacer(fd: opened)
        tempName = named
        // Acked ahead: the client's stdin window becomes uploadWindowBytes (PROTOCOL.md 8).
        link.send(Ack(bytes: UInt64(FlowControl.uploadWindowBytes - FlowControl.initialWindowBytes)), id: id)
    }

    func handle(_ frame: FrameView) throws(RequestError) {
        switch frame.header.kind {
        case .stdin:
            do throws(FileFailure) {
                try write(frame.payload)
                if frame.header.payloadCount > 0 { link.send(Ack(bytes: UInt64(frame.header.payloadCount)), id: id) }
                if frame.header.flags.contains(.end) { try finish() }
            } catch {
                end(failure: error)
            }
        case .ack:
            _ = try decodeAck(frame)   // nothing flows towards the client
        case .kill:
            end(failure: FileFailure(.transferAborted, op: "write", path: target.given, "the client cancelled the write; \(target.given) is unchanged"))
        default:
            throw RequestError(.unknownKind, "kind \(frame.header.kind) is not valid on an fsWrite")
        }
    }

    func linkDrained() {}

    func abort() {
        if let tempName { unlink(tempName.c) }
        tempName = nil
        // Its last reference: closing it frees what was written (on the reclaimer's thread
        // when that is a lot).
        if let file = fd.take() { FileReclaimer.dispose(file.release()) }
    }

    private func write(_ bytes: UnsafeRawBufferPointer) throws(FileFailure) {
        guard let raw = fd?.raw, !bytes.isEmpty else { return }
        if let limit = request.limit, written + UInt64(bytes.count) > limit {
            throw FileFailure(.fileTooLarge, op: "write", path: target.given, "more than the limit of \(limit) bytes")
        }
        do { try FileIO.writeAll(raw, bytes) } catch { throw FileFailure(op: "write", path: target.given, errno: error) }
        hasher.update(bytes)
        written += UInt64(bytes.count)
        writeback.wrote(bytes.count)
    }

    /// The last byte arrived: check, make durable, put in place.
    private func finish() throws(FileFailure) {
        guard let raw = fd?.raw else { return }
        let digest = hasher.finish()
        if let expected = request.sha256, expected != digest {
            throw FileFailure(.checksumMismatch, op: "write", path: target.given,
                              "the bytes have sha256 \(SHA256.hex(digest)), not \(SHA256.hex(expected)); \(target.given) is unchanged")
        }
        if !inPlace || existing == nil {
            let mode = request.mode ?? existing.map { UInt32($0.st_mode) & 0o7777 } ?? 0o644
            try fileCall("chmod", target.given) { fchmod(raw, mode_t(mode)) }
        }
        let uid = request.uid ?? (inPlace ? nil : existing?.st_uid)
        let gid = request.gid ?? (inPlace ? nil : existing?.st_gid)
        if uid != nil || gid != nil {
            try identity.run(as: user) { () throws(FileFailure) in
                try fileCall("chown", target.given) { fchown(raw, uid ?? uid_t.max, gid ?? gid_t.max) }
            }
        }
        try fileCall("fsync", target.given) { fsync(raw) }
        if !inPlace {
            if tempName == nil { try linkAnonymous(raw) }
            try identity.run(as: user) { () throws(FileFailure) in try putInPlace() }
            tempName = nil
            let directory = open(target.split.directory.c, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if directory >= 0 {
                _ = fsync(directory)   // the rename itself survives a crash
                close(directory)
            }
        }
        fd = nil
        link.send(FsDone(bytes: written, sha256: digest), id: id, flags: .end)
        onEnd()
    }

    /// Gives the O_TMPFILE inode a temporary name beside the target (linkat(2) through
    /// /proc/self/fd, which needs no capability), so that rename(2) can replace the target.
    /// Done with the agent's own credentials: the user's write permission on the directory
    /// was checked when the file was opened, and /proc/self/fd belongs to the agent.
    private func linkAnonymous(_ raw: CInt) throws(FileFailure) {
        Self.tempCounter += 1
        let name = Array(".\(String(decoding: target.split.name, as: UTF8.self)).tether-\(getpid())-\(Self.tempCounter)".utf8)
        let temp = target.split.directory.child(name)
        let proc = "/proc/self/fd/\(raw)"
        if linkat(AT_FDCWD, proc, AT_FDCWD, temp.c, AT_SYMLINK_FOLLOW) != 0 {
            let first = errno
            // No /proc: the same through AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH).
            guard linkat(raw, "", AT_FDCWD, temp.c, csys_at_empty_path()) == 0 else {
                throw FileFailure(op: "link", path: target.given, errno: Errno(rawValue: first))
            }
        }
        tempName = temp
    }

    private func putInPlace() throws(FileFailure) {
        guard let temp = tempName else { return }
        let pin = FileReclaimer.pin(target.c)   // the file replaced, if any
        defer { pin.map(FileReclaimer.release) }
        if request.ifAbsent {
            let result = csys_renameat2(AT_FDCWD, temp.c, AT_FDCWD, target.c, csys_rename_noreplace())
            if result == -EEXIST {
                throw FileFailure(.preconditionFailed, op: "rename", path: target.given, errno: EEXIST, "\(target.given) appeared meanwhile (ifAbsent)")
            }
            if result != -EINVAL {
                try fileShim("rename", target.given, result)
                return
            }
        }
        try fileCall("rename", target.given) { rename(temp.c, target.c) }
    }

    private func end(failure: FileFailure) {
        abort()
        sendFailure(failure, id: id, on: link)
        onEnd()
    }
}
