#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// `fsWatch`: inotify(7) on a path (and, recursive, every directory below it, watched as it
/// appears), reported as `fsEvents` batches, one per read of the inotify descriptor, with
/// repeated modifications of one path in a batch coalesced. While the link is congested the
/// watch stops reading; the kernel's queue then fills and its IN_Q_OVERFLOW becomes an explicit
/// `overflow` event. Ends when the client sends `kill` (`fsDone`), or when the watched path
/// itself goes away (`delete` of "", then `fsDone`).
///
/// Owns the inotify descriptor. Lives on the loop thread.
final class FileWatch: FileTransfer {
    private static let mask = UInt32(IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_DELETE | IN_DELETE_SELF | IN_MOVED_FROM
                                     | IN_MOVED_TO | IN_ATTRIB | IN_MOVE_SELF)

    private let id: UInt32
    private let link: FramedConnection
    private let loop: EventLoop
    private let root: FilePath
    private let recursive: Bool
    private let exclude: Set<[UInt8]>
    /// The inotify descriptor: closed by `fd = nil` in `stop()`, or when this goes.
    private var fd: OwnedFD?
    /// Watch descriptor -> path below the root ([] for the root).
    private var watched: [CInt: [UInt8]] = [:]
    private var reading = false
    private var buffer = [UInt8](repeating: 0, count: 64 << 10)
    private let onEnd: () -> Void

    init(id: UInt32, link: FramedConnection, loop: EventLoop, request: FsWatch, root: FilePath, identity: FileIdentity,
         user: ResolvedUser?, onEnd: @escaping () -> Void) throws(FileFailure) {
        self.id = id
        self.link = link
        self.loop = loop
        self.root = root
        self.recursive = request.recursive
        self.exclude = Set(request.exclude.map { Array($0.utf8) })
        self.onEnd = onEnd
        let raw = try fileShim("inotify_init", root.given, csys_inotify_init1(O_NONBLOCK | O_CLOEXEC))
        fd = OwnedFD(adopting: raw)
        try identity.run(as: user) { () throws(FileFailure) in
            try add(root, relative: [], required: true)
        }
        do { try loop.watch(raw, events: EventLoop.readable) { [unowned self] _ in readEvents() } } catch {
            throw FileFailure(op: "epoll_ctl", path: root.given, errno: error)
        }
        reading = true
    }

    /// Watches `path`; a directory below the root adds its own subdirectories when recursive.
    private func add(_ path: FilePath, relative: [UInt8], required: Bool) throws(FileFailure) {
        guard let raw = fd?.raw else { return }
        let wd = csys_inotify_add_watch(raw, path.c, Self.mask)
        if wd < 0 {
            if required { throw FileFailure(op: "inotify_add_watch", path: path.given, errno: Errno(rawValue: -wd)) }
            return   // gone meanwhile, or not a directory
        }
        watched[wd] = relative
        guard recursive, let dir = opendir(path.c) else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = DirectoryListing.name(of: entry)
            guard entry.pointee.d_type == UInt8(DT_DIR), name != [46], name != [46, 46], !exclude.contains(name) else { continue }
            try add(path.child(name), relative: joined(relative, name), required: false)
        }
    }

    private func joined(_ base: [UInt8], _ name: [UInt8]) -> [UInt8] { base.isEmpty ? name : base + [UInt8(ascii: "/")] + name }

    func handle(_ frame: FrameView) throws(RequestError) {
        switch frame.header.kind {
        case .kill:
            stop()
            link.send(FsDone(), id: id, flags: .end)
            onEnd()
        case .ack:
            _ = try decodeAck(frame)
        default:
            throw RequestError(.unknownKind, "kind \(frame.header.kind) is not valid on an fsWatch")
        }
    }

    func linkDrained() {
        guard !reading, let raw = fd?.raw else { return }
        do { try loop.watch(raw, events: EventLoop.readable) { [unowned self] _ in readEvents() } } catch { return }
        reading = true
        readEvents()
    }

    func abort() { stop() }

    private func stop() {
        if reading, let raw = fd?.raw { _ = loop.unwatch(raw) }
        reading = false
        fd = nil
    }

    private func readEvents() {
        guard let raw = fd?.raw else { return }
        var events: [FileEvent] = []
        var rootGone = false
        let n = buffer.withUnsafeMutableBytes { read(raw, $0.baseAddress, $0.count) }
        guard n > 0 else { return }
        var offset = 0
        // struct inotify_event: i32 wd, u32 mask, u32 cookie, u32 len, then len bytes of name.
        while offset + 16 <= n {
            let (wd, mask, cookie, length) = buffer.withUnsafeBytes { raw in
                (raw.loadUnaligned(fromByteOffset: offset, as: Int32.self), raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self),
                 raw.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self), Int(raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self)))
            }
            let name = Array(buffer[(offset + 16)..<min(n, offset + 16 + length)].prefix { $0 != 0 })
            offset += 16 + length
            if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                events.append(FileEvent(type: .overflow, path: OSString(bytes: [])))
                continue
            }
            if mask & UInt32(IN_IGNORED) != 0 { watched[wd] = nil; continue }
            guard let base = watched[wd] else { continue }
            let relative = name.isEmpty ? base : joined(base, name)
            if relative.split(separator: UInt8(ascii: "/")).contains(where: { exclude.contains(Array($0)) }) { continue }
            let isDirectory = mask & UInt32(IN_ISDIR) != 0
            let type: FileEventType
            if mask & UInt32(IN_CREATE) != 0 { type = .create }
            else if mask & UInt32(IN_MODIFY | IN_CLOSE_WRITE) != 0 { type = .modify }
            else if mask & UInt32(IN_DELETE) != 0 { type = .delete }
            else if mask & UInt32(IN_MOVED_FROM) != 0 { type = .moveFrom }
            else if mask & UInt32(IN_MOVED_TO) != 0 { type = .moveTo }
            else if mask & UInt32(IN_ATTRIB) != 0 { type = .attrib }
            else if mask & UInt32(IN_DELETE_SELF | IN_MOVE_SELF) != 0 {
                // A subdirectory's own deletion is reported by its parent; only the root's matters.
                if base.isEmpty { rootGone = true; events.append(FileEvent(type: .delete, path: OSString(bytes: []))) }
                continue
            } else { continue }
            let event = FileEvent(type: type, path: OSString(bytes: relative), cookie: cookie == 0 ? nil : cookie)
            if type == .modify, events.last == event { continue }   // coalesced
            events.append(event)
            if recursive && isDirectory && (type == .create || type == .moveTo) {
                let path = root.child(relative)
                let before = watched.count
                try? add(path, relative: relative, required: false)
                // Entries made before the watch existed would go unseen: report them as created.
                if watched.count > before { events += createdBelow(path, relative: relative) }
            }
        }
        if !events.isEmpty { link.send(FsEvents(events: events), id: id) }
        if rootGone {
            stop()
            link.send(FsDone(), id: id, flags: .end)
            onEnd()
            return
        }
        if link.congested, reading {
            // Stop reading until the link drains; the kernel queue takes the slack, then overflows.
            _ = loop.unwatch(raw)
            reading = false
        }
    }

    private func createdBelow(_ path: FilePath, relative: [UInt8]) -> [FileEvent] {
        guard let dir = opendir(path.c) else { return [] }
        defer { closedir(dir) }
        var events: [FileEvent] = []
        while let entry = readdir(dir), events.count < 4096 {
            let name = DirectoryListing.name(of: entry)
            guard name != [46], name != [46, 46], !exclude.contains(name) else { continue }
            let below = joined(relative, name)
            events.append(FileEvent(type: .create, path: OSString(bytes: below)))
            if entry.pointee.d_type == UInt8(DT_DIR) { events += createdBelow(path.child(name), relative: below) }
        }
        return events
    }
}
