#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// `fsRemove` of a directory with `recursive`: its tree is removed `entriesPerTurn` entries at
/// a time, each batch in its own turn of the loop, then `fsDone`. Removing a tree in one turn
/// held the agent's one thread for as long as the tree took: 0.27 s for 20,000 files here, a
/// ping waiting 265 ms behind it, seconds for a large build tree, long enough for a client's
/// agent watchdog to give up on every session. The walk is depth-first and never follows a
/// symlink out of the tree (every directory is opened with O_NOFOLLOW below its parent's
/// descriptor); a directory is removed once it is empty. Large files go through the
/// reclaimer as everywhere else. Cancelled (`kill`) or failing midway, what was removed stays
/// removed.
///
/// Owns its open directories. Lives on the loop thread.
final class FileRemoveTransfer: FileTransfer {
    /// Entries removed (or directories entered) per turn of the loop.
    static let entriesPerTurn = 256

    private let id: UInt32
    private let link: FramedConnection
    private let loop: EventLoop
    private let root: FilePath
    private let identity: FileIdentity
    private let user: ResolvedUser?
    private let onEnd: () -> Void
    /// The open directories from the root down to the one being emptied, each with its path
    /// and its name in its parent (nil for the root).
    private var stack: [(dir: OpaquePointer, path: FilePath, name: [UInt8]?)] = []
    private var ended = false

    init(id: UInt32, link: FramedConnection, loop: EventLoop, root: FilePath, identity: FileIdentity, user: ResolvedUser?,
         onEnd: @escaping () -> Void) throws(FileFailure) {
        self.id = id
        self.link = link
        self.loop = loop
        self.root = root
        self.identity = identity
        self.user = user
        self.onEnd = onEnd
        let dir = try identity.run(as: user) { () throws(FileFailure) in try FileOperations.openDirectory(root.c, path: root.given) }
        stack = [(dir, root, nil)]
        loop.afterReadyEvents { [weak self] in self?.step() }
    }

    deinit { release() }

    private func release() {
        for level in stack { closedir(level.dir) }
        stack.removeAll()
    }

    func handle(_ frame: FrameView) throws(RequestError) {
        switch frame.header.kind {
        case .kill:
            end(failure: FileFailure(.transferAborted, op: "remove", path: root.given,
                                     "the client cancelled the removal; what was removed before stays removed"))
        default:
            throw RequestError(.unknownKind, "kind \(frame.header.kind) is not valid on an fsRemove")
        }
    }

    func linkDrained() {}

    func abort() {
        ended = true
        release()
    }

    /// One batch, then the loop serves everything else before the next.
    private func step() {
        guard !ended else { return }
        do {
            let done = try identity.run(as: user) { () throws(FileFailure) -> Bool in try removeSome() }
            guard done else {
                loop.afterReadyEvents { [weak self] in self?.step() }
                return
            }
            ended = true
            link.send(FsDone(), id: id, flags: .end)
            onEnd()
        } catch {
            end(failure: error)
        }
    }

    /// Removes up to `entriesPerTurn` entries; true once the root itself is gone.
    private func removeSome() throws(FileFailure) -> Bool {
        var budget = Self.entriesPerTurn
        while budget > 0, let top = stack.last {
            budget -= 1
            guard let entry = readdir(top.dir) else {
                // Empty now: remove it from its parent (the root by its path).
                stack.removeLast()
                closedir(top.dir)
                if let parent = stack.last, let name = top.name {
                    try fileCall("rmdir", top.path.os) { unlinkat(dirfd(parent.dir), name.cString, AT_REMOVEDIR) }
                } else {
                    try fileCall("rmdir", root.given) { rmdir(root.c) }
                }
                continue
            }
            let name = DirectoryListing.name(of: entry)
            if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { continue }
            let parent = dirfd(top.dir)
            let child = top.path.child(name)
            if try Self.isDirectory(entry, name: name, in: parent, path: child) {
                stack.append((try FileOperations.openDirectory(name.cString, in: parent, path: child.os), child, name))
            } else {
                let pin = FileReclaimer.pin(name.cString, in: parent)
                defer { pin.map(FileReclaimer.release) }
                try fileCall("unlink", child.os) { unlinkat(parent, name.cString, 0) }
            }
        }
        return stack.isEmpty
    }

    /// The entry's type from readdir, or from lstat where the file system does not say.
    private static func isDirectory(_ entry: UnsafeMutablePointer<dirent>, name: [UInt8], in parent: CInt,
                                    path: FilePath) throws(FileFailure) -> Bool {
        if entry.pointee.d_type != UInt8(DT_UNKNOWN) { return entry.pointee.d_type == UInt8(DT_DIR) }
        var st = Glibc.stat()
        try fileCall("lstat", path.os) { fstatat(parent, name.cString, &st, AT_SYMLINK_NOFOLLOW) }
        return FileOperations.type(of: st.st_mode) == .dir
    }

    private func end(failure: FileFailure) {
        guard !ended else { return }
        ended = true
        release()
        sendFailure(failure, id: id, on: link)
        onEnd()
    }
}
