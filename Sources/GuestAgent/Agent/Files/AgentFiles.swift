#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// The files subsystem (`fs/1`, kinds 0x30-0x3F): stat, list, mkdir, remove, rename and
/// setattr answered in one turn; reads, writes and watches as `FileTransfer`s that live on
/// their id until their END. A request's bad payload is a `RequestError` (an `error` frame);
/// everything the file system refuses is an `fsError` with kind, operation, path and errno.
///
/// Owns its transfers and the identity switch. Lives on the agent's loop thread.
final class AgentFiles: AgentSubsystem {
    /// Transfers at once, across all clients; more are refused with `limitReached`.
    static let maxTransfers = 256

    private let loop: EventLoop
    private let identity = FileIdentity()
    private var transfers: [UInt32: FileTransfer] = [:]
    /// Set when the agent shuts down: nothing new starts.
    var refusesNew = false

    init(loop: EventLoop) { self.loop = loop }

    let startKinds: [FrameKind] = [.fsStat, .fsList, .fsMkdir, .fsRemove, .fsRename, .fsSetattr, .fsRead, .fsWrite, .fsArchive,
                                   .fsExtract, .fsWatch]

    func start(_ frame: FrameView, on link: FramedConnection) throws(RequestError) {
        let id = frame.header.id
        guard !refusesNew else { throw RequestError(.shuttingDown, "the agent is shutting down and starts nothing new") }
        switch frame.header.kind {
        case .fsStat:
            let request = try FsStat(frame, as: "fsStat")
            answer(id, on: link) { () throws(FileFailure) in
                let (path, user) = try resolve(request.scope)
                let info = try identity.run(as: user) { () throws(FileFailure) in try FileOperations.stat(path, follow: request.follow) }
                link.send(info, id: id, flags: .end)
            }
        case .fsList:
            let request = try FsList(frame, as: "fsList")
            answer(id, on: link) { () throws(FileFailure) in
                let (path, user) = try resolve(request.scope)
                let page = try identity.run(as: user) { () throws(FileFailure) in
                    try DirectoryListing.page(path, recursive: request.recursive, limit: Int(request.limit), cursor: request.cursor)
                }
                link.send(page, id: id, flags: .end)
            }
        case .fsMkdir:
            let request = try FsMkdir(frame, as: "fsMkdir")
            answerDone(id, on: link, request.scope) { (path) throws(FileFailure) in
                try FileOperations.mkdir(path, mode: request.mode, parents: request.parents)
            }
        case .fsRemove:
            let request = try FsRemove(frame, as: "fsRemove")
            if request.recursive { try checkRoom() }
            answer(id, on: link) { () throws(FileFailure) in
                let (path, user) = try resolve(request.scope)
                guard path.bytes.contains(where: { $0 != UInt8(ascii: "/") }) else {
                    throw FileFailure(.invalidPath, op: "remove", path: path.given, "the root directory cannot be removed")
                }
                // A tree goes a batch per turn (FileRemoveTransfer); anything else in this one.
                let isTree = try identity.run(as: user) { () throws(FileFailure) -> Bool in
                    if request.recursive, try FileOperations.isDirectory(path) { return true }
                    try FileOperations.remove(path)
                    return false
                }
                guard isTree else {
                    link.send(FsDone(), id: id, flags: .end)
                    return
                }
                transfers[id] = try FileRemoveTransfer(id: id, link: link, loop: loop, root: path, identity: identity, user: user,
                                                       onEnd: { [unowned self] in transfers[id] = nil })
            }
        case .fsRename:
            let request = try FsRename(frame, as: "fsRename")
            answerDone(id, on: link, request.scope) { (from) throws(FileFailure) in
                try FileOperations.rename(from, to: try FilePath(request.to, cwd: request.scope.cwd), overwrite: request.overwrite)
            }
        case .fsSetattr:
            let request = try FsSetattr(frame, as: "fsSetattr")
            answerDone(id, on: link, request.scope) { (path) throws(FileFailure) in
                try FileOperations.setattr(path, mode: request.mode, uid: request.uid, gid: request.gid)
            }
        case .fsRead:
            let request = try FsRead(frame, as: "fsRead")
            try checkRoom()
            answer(id, on: link) { () throws(FileFailure) in try startRead(request, id: id, on: link) }
        case .fsWrite:
            let request = try FsWrite(frame, as: "fsWrite")
            try checkRoom()
            answer(id, on: link) { () throws(FileFailure) in
                let (path, user) = try resolve(request.scope)
                transfers[id] = try FileWriteTransfer(id: id, link: link, request: request, target: path, user: user, identity: identity,
                                                      onEnd: { [unowned self] in transfers[id] = nil })
            }
        case .fsArchive:
            let request = try FsArchive(frame, as: "fsArchive")
            try checkRoom()
            answer(id, on: link) { () throws(FileFailure) in
                let (path, user) = try resolve(request.scope)
                let transfer = try FileArchiveTransfer(id: id, link: link, root: path, identity: identity, user: user,
                                                       onEnd: { [unowned self] in transfers[id] = nil })
                transfers[id] = transfer
                transfer.pump()
            }
        case .fsExtract:
            let request = try FsExtract(frame, as: "fsExtract")
            try checkRoom()
            answer(id, on: link) { () throws(FileFailure) in
                let (path, user) = try resolve(request.scope)
                transfers[id] = try FileExtractTransfer(id: id, link: link, root: path, owners: request.owners, identity: identity,
                                                        user: user, onEnd: { [unowned self] in transfers[id] = nil })
            }
        case .fsWatch:
            let request = try FsWatch(frame, as: "fsWatch")
            try checkRoom()
            answer(id, on: link) { () throws(FileFailure) in
                let (path, user) = try resolve(request.scope)
                transfers[id] = try FileWatch(id: id, link: link, loop: loop, request: request, root: path, identity: identity, user: user,
                                              onEnd: { [unowned self] in transfers[id] = nil })
            }
        default:
            throw RequestError(.unknownKind, "kind \(frame.header.kind) cannot start a files request")
        }
    }

    /// Runs a request; what the file system refuses ends it with an `fsError`.
    private func answer(_ id: UInt32, on link: FramedConnection, _ body: () throws(FileFailure) -> Void) {
        do { try body() } catch { sendFailure(error, id: id, on: link) }
    }

    /// A request answered by `fsDone` once `body` succeeded under the request's credentials.
    private func answerDone(_ id: UInt32, on link: FramedConnection, _ scope: FileScope,
                            _ body: (FilePath) throws(FileFailure) -> Void) {
        answer(id, on: link) { () throws(FileFailure) in
            let (path, user) = try resolve(scope)
            try identity.run(as: user) { () throws(FileFailure) in try body(path) }
            link.send(FsDone(), id: id, flags: .end)
        }
    }

    /// The agent has room for another transfer.
    private func checkRoom() throws(RequestError) {
        guard transfers.count < Self.maxTransfers else {
            throw RequestError(.limitReached, "\(Self.maxTransfers) file transfers are running already")
        }
    }

    private func resolve(_ scope: FileScope) throws(FileFailure) -> (FilePath, ResolvedUser?) {
        (try FilePath(scope.path, cwd: scope.cwd), try identity.resolve(scope.user))
    }

    private func startRead(_ request: FsRead, id: UInt32, on link: FramedConnection) throws(FileFailure) {
        let (path, user) = try resolve(request.scope)
        let raw = try identity.run(as: user) { () throws(FileFailure) in
            // O_NONBLOCK: opening a FIFO must not wait for a writer (the agent has one thread).
            try fileCall("open", path.given) { open(path.c, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC) }
        }
        var st = Glibc.stat()
        let info: FsInfo
        do throws(FileFailure) {
            try fileCall("fstat", path.given) { fstat(raw, &st) }
            info = FileOperations.info(st)
            guard info.type != .dir else {
                throw FileFailure(.isDirectory, op: "read", path: path.given, errno: EISDIR, "\(path.given) is a directory")
            }
            // A FIFO, socket or device could block the agent's one thread or never end.
            guard info.type == .file else {
                throw FileFailure(.invalidArgument, op: "read", path: path.given, "\(path.given) is not a regular file")
            }
            if let limit = request.limit, info.size > limit {
                throw FileFailure(.fileTooLarge, op: "read", path: path.given, "\(info.size) bytes is more than the limit of \(limit)")
            }
        } catch {
            close(raw)
            throw error
        }
        // Read to the size the file has now: one that grows meanwhile does not hold the read open.
        let available = info.size &- min(info.size, request.offset)
        let length = min(request.length ?? UInt64.max, available)
        link.send(info, id: id)
        let transfer = FileReadTransfer(id: id, link: link, path: path.given, fd: raw, offset: request.offset, length: length,
                                        onEnd: { [unowned self] in transfers[id] = nil })
        transfers[id] = transfer
        transfer.pump()
    }

    func holds(_ id: UInt32) -> Bool { transfers[id] != nil }

    func handle(_ frame: FrameView, on link: FramedConnection) throws(RequestError) {
        try transfers[frame.header.id]?.handle(frame)
    }

    func abandon(_ id: UInt32) {
        transfers.removeValue(forKey: id)?.abort()
    }

    func linkClosed(_ link: FramedConnection) {
        let all = transfers
        transfers.removeAll()
        for transfer in all.values { transfer.abort() }
    }

    func linkDrained(_ link: FramedConnection) {
        for transfer in Array(transfers.values) { transfer.linkDrained() }
    }

    /// Ends every transfer (the agent stopped serving).
    func endAll() {
        let all = transfers
        transfers.removeAll()
        for transfer in all.values { transfer.abort() }
    }
}
