#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// One page of a directory listing, resumable from a cursor without the agent keeping any
/// state between pages: the cursor holds, for each directory from the listed one down to the
/// one being read, its name and the position telldir(3) gave after the last entry returned
/// (positions stay valid across opens of the same directory; NFS relies on the same). A
/// recursive listing is a pre-order walk; symlinks are listed, never followed.
///
/// Cursor bytes: per level, `u64 BE position`, `u16 BE name length`, name (empty for the top).
struct DirectoryListing {
    /// A page stops before its encoding could pass this, far below the 1 MiB frame limit.
    static let pageBytes = 512 << 10

    struct Level {
        var name: [UInt8]
        var position: Int
    }

    static func name(of entry: UnsafeMutablePointer<dirent>) -> [UInt8] {
        withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }) }
    }

    static func decode(cursor: [UInt8], path: OSString) throws(FileFailure) -> [Level] {
        var levels: [Level] = []
        var i = 0
        func bad() -> FileFailure { FileFailure(.invalidPath, op: "list", path: path, "the cursor is not one this agent made") }
        while i < cursor.count {
            guard cursor.count - i >= 10 else { throw bad() }
            var position: UInt64 = 0
            for b in cursor[i..<(i + 8)] { position = position << 8 | UInt64(b) }
            let length = Int(cursor[i + 8]) << 8 | Int(cursor[i + 9])
            i += 10
            guard cursor.count - i >= length, position <= UInt64(Int.max) else { throw bad() }
            let name = Array(cursor[i..<(i + length)])
            i += length
            guard levels.isEmpty == name.isEmpty, !name.contains(0), !name.contains(UInt8(ascii: "/")),
                  name != [UInt8(ascii: ".")], name != [UInt8(ascii: "."), UInt8(ascii: ".")] else { throw bad() }
            levels.append(Level(name: name, position: Int(position)))
        }
        guard levels.count <= 256 else { throw bad() }
        return levels
    }

    static func encode(_ levels: [Level]) -> [UInt8] {
        var out: [UInt8] = []
        for level in levels {
            let position = UInt64(level.position)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: position >> UInt64(shift))) }
            out += [UInt8(level.name.count >> 8), UInt8(truncatingIfNeeded: level.name.count)]
            out += level.name
        }
        return out
    }

    /// One page: up to `limit` entries from where `cursor` left off.
    static func page(_ path: FilePath, recursive: Bool, limit: Int, cursor: [UInt8]?) throws(FileFailure) -> FsEntries {
        var levels = try cursor.map { (c) throws(FileFailure) in try decode(cursor: c, path: path.given) } ?? []
        if levels.isEmpty { levels = [Level(name: [], position: 0)] }
        // Open every level of the cursor, each inside the one above it.
        var open: [OpaquePointer] = []
        defer { for dir in open { closedir(dir) } }
        open.append(try FileOperations.openDirectory(path.c, follow: true, path: path.given))
        for (index, level) in levels.enumerated() {
            if index > 0 {
                let parent = open[open.count - 1]
                let fd = openat(dirfd(parent), level.name.cString, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                // The directory went away (or was replaced) between pages: go on after it.
                guard fd >= 0, let dir = fdopendir(fd) else {
                    if fd >= 0 { close(fd) }
                    levels.removeLast(levels.count - index)
                    break
                }
                open.append(dir)
            }
            if level.position != 0 { seekdir(open[open.count - 1], level.position) }
        }

        var entries: [FileEntry] = []
        var bytes = 0
        while entries.count < limit && bytes < pageBytes {
            let dir = open[open.count - 1]
            errno = 0
            guard let entry = readdir(dir) else {
                let code = errno
                if code != 0 { throw FileFailure(op: "readdir", path: path.given, errno: Errno(rawValue: code)) }
                // This directory is done: back to its parent, or the end of the listing.
                guard open.count > 1 else { return FsEntries(entries: entries, nextCursor: nil) }
                closedir(open.removeLast())
                levels.removeLast()
                continue
            }
            let name = Self.name(of: entry)
            if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { continue }
            var st = Glibc.stat()
            guard fstatat(dirfd(dir), name.cString, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }  // gone meanwhile
            let relative = levels.dropFirst().flatMap { $0.name + [UInt8(ascii: "/")] } + name
            let type = FileOperations.type(of: st.st_mode)
            entries.append(FileEntry(name: OSString(bytes: relative), type: type, size: UInt64(max(0, st.st_size)),
                                     mode: UInt32(st.st_mode) & 0o7777, mtimeNs: FileOperations.nanoseconds(st.st_mtim)))
            bytes += relative.count + 64
            levels[levels.count - 1].position = telldir(dir)
            if recursive && type == .dir && levels.count < 256 {
                let fd = openat(dirfd(dir), name.cString, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if fd >= 0, let sub = fdopendir(fd) {
                    open.append(sub)
                    levels.append(Level(name: name, position: 0))
                } else if fd >= 0 {
                    close(fd)
                }
            }
        }
        return FsEntries(entries: entries, nextCursor: encode(levels))
    }
}
