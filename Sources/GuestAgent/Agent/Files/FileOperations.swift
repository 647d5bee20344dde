#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// The files requests answered in one turn: stat, mkdir, remove, rename, setattr. Each runs
/// under the request's credentials (`FileIdentity`) and throws a `FileFailure` naming the
/// operation, path and errno. Stateless; runs on the agent's loop thread.
enum FileOperations {
    static func stat(_ path: FilePath, follow: Bool) throws(FileFailure) -> FsInfo {
        var st = Glibc.stat()
        try fileCall(follow ? "stat" : "lstat", path.given) { fstatat(AT_FDCWD, path.c, &st, follow ? 0 : AT_SYMLINK_NOFOLLOW) }
        var info = info(st)
        if info.type == .symlink { info.target = try readLink(path) }
        return info
    }

    static func info(_ st: Glibc.stat) -> FsInfo {
        FsInfo(type: type(of: st.st_mode), size: UInt64(max(0, st.st_size)), mode: UInt32(st.st_mode) & 0o7777,
               uid: st.st_uid, gid: st.st_gid, mtimeNs: nanoseconds(st.st_mtim), atimeNs: nanoseconds(st.st_atim),
               ctimeNs: nanoseconds(st.st_ctim), ino: UInt64(st.st_ino), nlink: UInt64(st.st_nlink))
    }

    static func type(of mode: mode_t) -> FileType {
        switch mode & S_IFMT {
        case S_IFREG: .file
        case S_IFDIR: .dir
        case S_IFLNK: .symlink
        default: .other
        }
    }

    static func nanoseconds(_ t: timespec) -> Int64 { Int64(t.tv_sec) &* 1_000_000_000 &+ Int64(t.tv_nsec) }

    static func readLink(_ path: FilePath) throws(FileFailure) -> OSString {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = try fileCall("readlink", path.given) { readlink(path.c, &buffer, buffer.count - 1) }
        return OSString(bytes: buffer.prefix(n).map { UInt8(bitPattern: $0) })
    }

    // MARK: changes

    static func mkdir(_ path: FilePath, mode: UInt32, parents: Bool) throws(FileFailure) {
        if parents {
            var st = Glibc.stat()
            if fstatat(AT_FDCWD, path.c, &st, 0) == 0 {
                guard type(of: st.st_mode) == .dir else {
                    throw FileFailure(.notDirectory, op: "mkdir", path: path.given, errno: ENOTDIR, "\(path.given) exists and is not a directory")
                }
                return
            }
            let parent = path.split.directory
            if parent.bytes != path.bytes { try mkdir(parent, mode: 0o755, parents: true) }
        }
        do { _ = try retrying { Glibc.mkdir(path.c, mode_t(mode)) } } catch {
            if parents && error.rawValue == EEXIST { return }   // made by someone else meanwhile
            throw FileFailure(op: "mkdir", path: path.given, errno: error)
        }
        // mkdir(2) applies the umask; the request's mode is what the caller asked for.
        try fileCall("chmod", path.given) { chmod(path.c, mode_t(mode)) }
    }

    /// Removes a file, a symlink or an empty directory (a tree is `FileRemoveTransfer`'s).
    static func remove(_ path: FilePath) throws(FileFailure) {
        guard try isDirectory(path) else {
            let pin = FileReclaimer.pin(path.c)
            defer { pin.map(FileReclaimer.release) }
            try fileCall("unlink", path.given) { unlink(path.c) }
            return
        }
        try fileCall("rmdir", path.given) { rmdir(path.c) }
    }

    /// The directory `name` (under `parent`'s descriptor, or a path) as a directory stream for
    /// readdir(3). `follow`: a final symlink is followed (the directory a request names);
    /// otherwise it is refused (ELOOP), so a walk never leaves its tree. `path` is what a
    /// failure names.
    static func openDirectory(_ name: [CChar], in parent: CInt = AT_FDCWD, follow: Bool = false,
                              path: OSString) throws(FileFailure) -> OpaquePointer {
        let flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW)
        let fd = try fileCall("open", path) { openat(parent, name, flags) }
        guard let dir = fdopendir(fd) else {
            let code = errno
            close(fd)
            throw FileFailure(op: "opendir", path: path, errno: Errno(rawValue: code))
        }
        return dir
    }

    /// Whether `path` itself (not what a symlink names) is a directory.
    static func isDirectory(_ path: FilePath) throws(FileFailure) -> Bool {
        var st = Glibc.stat()
        try fileCall("lstat", path.given) { fstatat(AT_FDCWD, path.c, &st, AT_SYMLINK_NOFOLLOW) }
        return type(of: st.st_mode) == .dir
    }

    static func rename(_ from: FilePath, to: FilePath, overwrite: Bool) throws(FileFailure) {
        if overwrite {
            let pin = FileReclaimer.pin(to.c)   // the file replaced, if any
            defer { pin.map(FileReclaimer.release) }
            try fileCall("rename", from.given) { Glibc.rename(from.c, to.c) }
            return
        }
        let result = csys_renameat2(AT_FDCWD, from.c, AT_FDCWD, to.c, csys_rename_noreplace())
        if result == -EINVAL {
            // A file system without RENAME_NOREPLACE: check, then rename (not atomic there).
            if access(to.c, F_OK) == 0 || errno != ENOENT {
                throw FileFailure(.fileExists, op: "rename", path: to.given, errno: EEXIST, "\(to.given) exists (overwrite is false)")
            }
            try fileCall("rename", from.given) { Glibc.rename(from.c, to.c) }
            return
        }
        if result == -EEXIST {
            throw FileFailure(.fileExists, op: "rename", path: to.given, errno: EEXIST, "\(to.given) exists (overwrite is false)")
        }
        try fileShim("rename", from.given, result)
    }

    static func setattr(_ path: FilePath, mode: UInt32?, uid: UInt32?, gid: UInt32?) throws(FileFailure) {
        if uid != nil || gid != nil {
            try fileCall("chown", path.given) { chown(path.c, uid ?? uid_t.max, gid ?? gid_t.max) }
        }
        if let mode { try fileCall("chmod", path.given) { chmod(path.c, mode_t(mode)) } }
    }
}
