#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherClient
import TetherPosix
import TetherProtocol

/// Directories: one tar stream each way (`fsExtract` up, `fsArchive` down). The local side
/// of the stream is made or unpacked on a dedicated thread (`LocalTree`).
extension Copy {
    func uploadTree(_ files: Files, from local: String, to path: String, replacing: Bool) async throws(FileError) {
        let progress = ProgressLine(label: "\(local) -> \(path)", total: nil, enabled: self.progress)
        defer { progress.finish() }
        let source: LocalSource
        do {
            source = try LocalSource(named: "tether-cp-tar") { emit in LocalTree.archive(local, emit: emit) }
        } catch { throw FileCommands.local(error, op: "read", path: local) }
        let counted = source.map { chunk -> [UInt8] in
            progress.advance(chunk.count)
            return chunk
        }
        do { try await files.extract(path, contents: counted, owners: keepOwners) } catch {
            source.cancel()
            throw source.failure ?? error
        }
    }

    func downloadTree(_ files: Files, from path: String, to local: String) async throws(FileError) {
        let stream = try await files.archive(path)
        let extractor = LocalTree.Extractor(root: local, owners: keepOwners)
        let sink: LocalSink
        do {
            sink = try LocalSink(named: "tether-cp-untar", consume: { extractor.feed($0) }, finish: { extractor.finish() })
        } catch { throw FileCommands.local(error, op: "write", path: local) }
        try await pump(stream, into: sink, progress: ProgressLine(label: "\(path) -> \(local)", total: nil, enabled: self.progress))
    }
}

/// Local trees as tar streams, on the copy's own thread (blocking file I/O).
enum LocalTree {
    /// Walks `root` pre-order and emits its tar stream; symlinks as links, other special files
    /// left out. Returns a local failure, or nil when the stream is complete (or unwanted).
    static func archive(_ root: String, emit: ([UInt8]) -> Bool) -> FileError? {
        var pending: [UInt8] = []
        func flush(_ force: Bool) -> Bool {
            guard force || pending.count >= LocalSource.chunkBytes else { return true }
            defer { pending.removeAll(keepingCapacity: true) }
            return pending.isEmpty || emit(pending)
        }
        func walk(_ directory: String, relative: String) -> FileError?? {
            guard let dir = opendir(directory) else { return .some(FileCommands.local(Errno(rawValue: errno), op: "opendir", path: directory)) }
            defer { closedir(dir) }
            var names: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { names.append(name) }
            }
            for name in names.sorted() {
                let path = Copy.joined(directory, name)
                let below = relative.isEmpty ? name : relative + "/" + name
                var st = stat()
                guard lstat(path, &st) == 0 else { continue }
                var entry = TarEntry(name: Array(below.utf8), type: .file, mode: UInt32(st.st_mode) & 0o7777, uid: st.st_uid,
                                     gid: st.st_gid, mtime: Int64(st.st_mtim.tv_sec))
                switch st.st_mode & S_IFMT {
                case S_IFDIR:
                    entry.type = .directory
                    pending += TarWriter.header(entry)
                    if let failure = walk(path, relative: below) { return failure }
                case S_IFLNK:
                    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                    let n = readlink(path, &buffer, buffer.count - 1)
                    guard n >= 0 else { return .some(FileCommands.local(Errno(rawValue: errno), op: "readlink", path: path)) }
                    entry.type = .symlink
                    entry.linkName = buffer.prefix(n).map { UInt8(bitPattern: $0) }
                    pending += TarWriter.header(entry)
                case S_IFREG:
                    let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                    guard fd >= 0 else { return .some(FileCommands.local(Errno(rawValue: errno), op: "open", path: path)) }
                    defer { close(fd) }
                    entry.size = UInt64(max(0, st.st_size))
                    pending += TarWriter.header(entry)
                    var left = entry.size
                    var buffer = [UInt8](repeating: 0, count: LocalSource.chunkBytes)
                    while left > 0 {
                        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, Int(min(UInt64($0.count), left))) }
                        if n < 0 && errno == EINTR { continue }
                        guard n >= 0 else { return .some(FileCommands.local(Errno(rawValue: errno), op: "read", path: path)) }
                        // A file that shrank meanwhile: zeros keep the announced size.
                        let chunk = n == 0 ? [UInt8](repeating: 0, count: Int(min(left, UInt64(buffer.count)))) : Array(buffer[0..<n])
                        pending += chunk
                        left -= UInt64(chunk.count)
                        if !flush(false) { return .some(nil) }
                    }
                    pending += TarWriter.padding(entry.size)
                default:
                    continue
                }
                if !flush(false) { return .some(nil) }
            }
            return nil
        }
        if let stopped = walk(root, relative: "") { return stopped }
        pending += TarWriter.trailer
        _ = flush(true)
        return nil
    }

    /// Unpacks a tar stream below a local directory; entries may not leave it.
    final class Extractor: @unchecked Sendable {
        private let root: String
        private let owners: Bool
        /// Touched only by the sink's thread.
        private var reader = TarReader()
        private var current: (fd: CInt, entry: TarEntry, path: String)?
        private var directories: [(String, TarEntry)] = []

        init(root: String, owners: Bool) {
            self.root = root
            self.owners = owners
        }

        func feed(_ bytes: [UInt8]) -> FileError? {
            if directories.isEmpty && current == nil && reader.atBoundary {
                var st = stat()
                if stat(root, &st) != 0 && mkdir(root, 0o755) != 0 && errno != EEXIST {
                    return FileCommands.local(Errno(rawValue: errno), op: "mkdir", path: root)
                }
            }
            let events: [TarReader.Event]
            do { events = try reader.feed(bytes) } catch {
                return FileError.local(.invalidArgument, op: "extract", path: root, "the guest's archive is not a tar stream: \(error)")
            }
            for event in events {
                if let failure = apply(event) { return failure }
            }
            return nil
        }

        func finish() -> FileError? {
            do { try reader.finish() } catch { return FileError.local(.transferAborted, op: "extract", path: root, "\(error)") }
            for (path, entry) in directories.reversed() {
                if owners { _ = lchown(path, entry.uid, entry.gid) }
                if chmod(path, mode_t(entry.mode)) != 0 { return FileCommands.local(Errno(rawValue: errno), op: "chmod", path: path) }
            }
            return nil
        }

        private func apply(_ event: TarReader.Event) -> FileError? {
            switch event {
            case .entry(let entry):
                return start(entry)
            case .data(let bytes):
                guard let current else { return nil }
                do { try FileIO.writeAll(current.fd, bytes) } catch { return FileCommands.local(error, op: "write", path: current.path) }
            case .entryEnd:
                guard let current else { return nil }
                defer { close(current.fd); self.current = nil }
                if fchmod(current.fd, mode_t(current.entry.mode)) != 0 {
                    return FileCommands.local(Errno(rawValue: errno), op: "chmod", path: current.path)
                }
                if owners && fchown(current.fd, current.entry.uid, current.entry.gid) != 0 {
                    return FileCommands.local(Errno(rawValue: errno), op: "chown", path: current.path)
                }
            case .end:
                break
            }
            return nil
        }

        private func start(_ entry: TarEntry) -> FileError? {
            let name = String(decoding: entry.name, as: UTF8.self)
            let components = name.split(separator: "/")
            guard !components.isEmpty, !name.hasPrefix("/"), !components.contains("..") else {
                return FileError.local(.invalidPath, op: "extract", path: name, "the entry '\(name)' would leave \(root)")
            }
            var path = root
            for (index, component) in components.enumerated() where component != "." {
                path = Copy.joined(path, String(component))
                var st = stat()
                if index < components.count - 1 && lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK {
                    return FileError.local(.invalidPath, op: "extract", path: name, "the entry '\(name)' goes through the symlink \(path)")
                }
            }
            var st = stat()
            let exists = lstat(path, &st) == 0
            let isDirectory = exists && (st.st_mode & S_IFMT) == S_IFDIR
            switch entry.type {
            case .directory:
                if !isDirectory {
                    if exists { unlink(path) }
                    guard mkdir(path, 0o700) == 0 else { return FileCommands.local(Errno(rawValue: errno), op: "mkdir", path: path) }
                }
                directories.append((path, entry))
            case .file:
                if isDirectory { return FileError.local(.isDirectory, op: "extract", path: path, "\(path) is a directory") }
                if exists && (st.st_mode & S_IFMT) == S_IFLNK { unlink(path) }
                let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
                guard fd >= 0 else { return FileCommands.local(Errno(rawValue: errno), op: "open", path: path) }
                current = (fd, entry, path)
            case .symlink:
                if isDirectory { return FileError.local(.isDirectory, op: "extract", path: path, "\(path) is a directory") }
                if exists { unlink(path) }
                guard symlink(String(decoding: entry.linkName, as: UTF8.self), path) == 0 else {
                    return FileCommands.local(Errno(rawValue: errno), op: "symlink", path: path)
                }
                if owners { _ = lchown(path, entry.uid, entry.gid) }
            case .other:
                break
            }
            return nil
        }
    }
}
