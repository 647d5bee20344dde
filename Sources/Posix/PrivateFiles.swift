#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Files and directories of host state that only their owner may change (`$TETHER_HOME`, a
/// sandbox's directory, a relay's exec.log).
///
/// A directory is trusted when lstat(2) finds a real directory (a symbolic link in its place is
/// refused, not followed) that belongs to the effective user and that group and others cannot
/// write: nobody else can then plant a link or a file in it. Files are opened with O_NOFOLLOW,
/// so a symbolic link in place of one fails with ELOOP instead of redirecting a write to
/// whatever it names, and with O_NONBLOCK, so a FIFO in its place cannot hang the opener; after
/// the open, fstat(2) must find a regular file of ours with one name (a hard link to someone
/// else's file would otherwise pass O_NOFOLLOW). New JSON files are written to a fresh
/// temporary (O_EXCL) and renamed over the old one.
public enum PrivateFiles {
    /// lstat(2)s `path`: a directory of the effective user, not writable by group or others.
    public static func checkDirectory(_ path: String) throws(UnsafePathError) {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw UnsafePathError(path: path, problem: .failed(operation: "lstat", .current)) }
        try checkDirectory(path, st)
    }

    /// Creates `path` (mode 0700) when it is missing, then checks it as `checkDirectory` does.
    public static func makeDirectory(_ path: String) throws(UnsafePathError) {
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw UnsafePathError(path: path, problem: .failed(operation: "mkdir", .current))
        }
        try checkDirectory(path)
    }

    /// Opens a file for appending, creating it (with `mode`) when missing.
    public static func openForAppend(_ path: String, mode: mode_t = 0o600) throws(UnsafePathError) -> OwnedFD {
        try open(path, O_WRONLY | O_APPEND | O_CREAT, mode: mode)
    }

    /// Opens a file for reading and writing, creating it when missing (lock files).
    public static func openForUpdate(_ path: String, mode: mode_t = 0o600) throws(UnsafePathError) -> OwnedFD {
        try open(path, O_RDWR | O_CREAT, mode: mode)
    }

    /// Creates a new file for writing; fails (EEXIST) when anything, a link included, has the name.
    public static func createNew(_ path: String, mode: mode_t = 0o600) throws(UnsafePathError) -> OwnedFD {
        try open(path, O_WRONLY | O_CREAT | O_EXCL, mode: mode)
    }

    /// Opens an existing file for reading. `anyOwner` accepts a file of another user (the
    /// guest's files, seen from the host), still refusing links and anything but a regular file.
    public static func openForReading(_ path: String, anyOwner: Bool = false) throws(UnsafePathError) -> OwnedFD {
        try open(path, O_RDONLY, mode: 0, anyOwner: anyOwner)
    }

    /// Opens a directory without following a link at its last component (O_DIRECTORY|O_NOFOLLOW),
    /// for reading and removing files in it with the `in:` calls: a directory someone else can
    /// replace with a link (the guest's, seen from the host) is then pinned once and for all.
    public static func openDirectory(_ path: String) throws(UnsafePathError) -> OwnedFD {
        do {
            return OwnedFD(adopting: try retrying { Glibc.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) })
        } catch {
            if error == .loop { throw UnsafePathError(path: path, problem: .symbolicLink) }
            if error == .notDirectory { throw UnsafePathError(path: path, problem: .notADirectory(found: "not a directory")) }
            throw UnsafePathError(path: path, problem: .failed(operation: "open", error))
        }
    }

    /// Reads a whole small file `name` of an `openDirectory` descriptor, as `read` does.
    public static func read(_ name: String, in directory: borrowing OwnedFD, limit: Int = 1 << 20,
                            anyOwner: Bool = false) throws(UnsafePathError) -> [UInt8] {
        let fd = try open(name, O_RDONLY, mode: 0, anyOwner: anyOwner, at: directory.raw)
        do {
            return try readAll(fd.raw, limit: limit)
        } catch {
            throw UnsafePathError(path: name, problem: .failed(operation: "read", error))
        }
    }

    /// Reads a whole small file opened as `openForReading` does; at most `limit` bytes.
    public static func read(_ path: String, limit: Int = 1 << 20, anyOwner: Bool = false) throws(UnsafePathError) -> [UInt8] {
        let fd = try openForReading(path, anyOwner: anyOwner)
        do {
            return try readAll(fd.raw, limit: limit)
        } catch {
            throw UnsafePathError(path: path, problem: .failed(operation: "read", error))
        }
    }

    /// The last `limit` bytes of a file opened as `openForReading` does.
    public static func readTail(_ path: String, limit: Int) throws(UnsafePathError) -> [UInt8] {
        let fd = try openForReading(path)
        var st = stat()
        if fstat(fd.raw, &st) == 0 && Int(st.st_size) > limit { _ = lseek(fd.raw, off_t(Int(st.st_size) - limit), SEEK_SET) }
        do {
            return try readAll(fd.raw, limit: limit)
        } catch {
            throw UnsafePathError(path: path, problem: .failed(operation: "read", error))
        }
    }

    /// Replaces `path` with `bytes` atomically: a reader sees the old file or the new one. The
    /// bytes go to a fresh temporary beside it (O_EXCL: nothing planted is reused), which
    /// rename(2) then puts in place; rename replaces a link at `path` and never follows it.
    public static func writeAtomically(_ bytes: [UInt8], to path: String, mode: mode_t = 0o600) throws(UnsafePathError) {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        var attempt = 0
        while true {
            let temporary = directory + "/." + base + "." + randomSuffix()
            let fd: OwnedFD
            do {
                fd = try createNew(temporary, mode: mode)
            } catch {
                attempt += 1
                if case .failed(_, let cause) = error.problem, cause == .exists, attempt < 8 { continue }
                throw error
            }
            do {
                try FileIO.writeAll(fd.raw, bytes)
            } catch {
                unlink(temporary)
                throw UnsafePathError(path: temporary, problem: .failed(operation: "write", error))
            }
            _ = consume fd
            guard rename(temporary, path) == 0 else {
                let cause = Errno.current
                unlink(temporary)
                throw UnsafePathError(path: path, problem: .failed(operation: "rename", cause))
            }
            return
        }
    }

    // MARK: internals

    private static func open(_ path: String, _ flags: CInt, mode: mode_t, anyOwner: Bool = false,
                             at directory: CInt = AT_FDCWD) throws(UnsafePathError) -> OwnedFD {
        let raw: CInt
        do {
            raw = try retrying { openat(directory, path, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode) }
        } catch {
            // ELOOP from O_NOFOLLOW: the last component is a symbolic link.
            if error == .loop { throw UnsafePathError(path: path, problem: .symbolicLink) }
            throw UnsafePathError(path: path, problem: .failed(operation: "open", error))
        }
        let fd = OwnedFD(adopting: raw)
        var st = stat()
        guard fstat(fd.raw, &st) == 0 else { throw UnsafePathError(path: path, problem: .failed(operation: "fstat", .current)) }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw UnsafePathError(path: path, problem: .notARegularFile(found: fileType(st.st_mode)))
        }
        if !anyOwner {
            guard st.st_uid == geteuid() else {
                throw UnsafePathError(path: path, problem: .wrongOwner(owner: st.st_uid, mode: UInt32(st.st_mode & 0o7777), expected: geteuid()))
            }
            guard st.st_nlink <= 1 else { throw UnsafePathError(path: path, problem: .hardLinked(links: UInt64(st.st_nlink))) }
        }
        // O_NONBLOCK was only for the open (a FIFO); regular files ignore it, but a later
        // reader or writer should not meet EAGAIN from anything that changes that.
        _ = fcntl(fd.raw, F_SETFL, fcntl(fd.raw, F_GETFL) & ~O_NONBLOCK)
        return fd
    }

    private static func checkDirectory(_ path: String, _ st: stat) throws(UnsafePathError) {
        let type = st.st_mode & S_IFMT
        if type == S_IFLNK { throw UnsafePathError(path: path, problem: .symbolicLink) }
        guard type == S_IFDIR else { throw UnsafePathError(path: path, problem: .notADirectory(found: fileType(st.st_mode))) }
        guard st.st_uid == geteuid() else {
            throw UnsafePathError(path: path, problem: .wrongOwner(owner: st.st_uid, mode: UInt32(st.st_mode & 0o7777), expected: geteuid()))
        }
        guard st.st_mode & (S_IWGRP | S_IWOTH) == 0 else {
            throw UnsafePathError(path: path, problem: .writableByOthers(mode: UInt32(st.st_mode & 0o7777)))
        }
    }

    private static func readAll(_ fd: CInt, limit: Int) throws(Errno) -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while result.count < limit {
            let want = min(chunk.count, limit - result.count)
            let n = try chunk.withMutableBytes { (raw) throws(Errno) -> Int in
                try retrying { Glibc.read(fd, raw.baseAddress, want) }
            }
            if n == 0 { break }
            result += chunk[0..<n]
        }
        return result
    }

    private static func randomSuffix() -> String {
        var value = UInt64.random(in: .min ... .max)
        var text = ""
        for _ in 0..<12 {
            text.append(Character(Unicode.Scalar(UInt8(ascii: "a") + UInt8(value % 26))))
            value /= 26
        }
        return text
    }

    static func fileType(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: "a regular file"
        case S_IFDIR: "a directory"
        case S_IFLNK: "a symbolic link"
        case S_IFIFO: "a FIFO"
        case S_IFSOCK: "a socket"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        default: "a file of unknown type"
        }
    }
}

/// A path of host state that is not safe to use, and why: what was found and what is expected.
/// Nothing was read from, written to or changed at `path`.
public struct UnsafePathError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Problem: Equatable, Sendable {
        /// A symbolic link where a real directory or file must be (for a file: ELOOP from O_NOFOLLOW).
        case symbolicLink
        case notADirectory(found: String)
        case notARegularFile(found: String)
        /// Owned by another user than the effective one (`mode`: its permission bits).
        case wrongOwner(owner: uid_t, mode: UInt32, expected: uid_t)
        /// A directory that group or others may write (its permission bits).
        case writableByOthers(mode: UInt32)
        /// A file with other names too: possibly a hard link to a file elsewhere.
        case hardLinked(links: UInt64)
        /// A call failed for an ordinary reason (ENOENT, EACCES, ENOSPC, ...).
        case failed(operation: String, Errno)
    }

    public let path: String
    public let problem: Problem

    public init(path: String, problem: Problem) {
        self.path = path
        self.problem = problem
    }

    /// The errno that stands for the problem (ELOOP for a link, EPERM for an owner or mode).
    public var errno: Errno {
        switch problem {
        case .symbolicLink: .loop
        case .notADirectory: .notDirectory
        case .notARegularFile: .invalid
        case .wrongOwner, .writableByOthers: .notPermitted
        case .hardLinked: .tooManyLinks
        case .failed(_, let cause): cause
        }
    }

    public var message: String {
        switch problem {
        case .symbolicLink:
            "\(path) is a symbolic link; expected a real file or directory of uid \(geteuid()) (links are not followed in host state)"
        case .notADirectory(let found):
            "\(path) is \(found); expected a directory of uid \(geteuid())"
        case .notARegularFile(let found):
            "\(path) is \(found); expected a regular file"
        case .wrongOwner(let owner, let mode, let expected):
            "\(path) belongs to uid \(owner) (mode \(Self.octal(mode))); expected uid \(expected), the user running this, with mode 0700"
        case .writableByOthers(let mode):
            "\(path) has mode \(Self.octal(mode)), writable by group or others; expected 0700 (or at least no write bits for group and others)"
        case .hardLinked(let links):
            "\(path) has \(links) hard links; expected a file with one name"
        case .failed(let operation, let cause):
            "\(operation) \(path): \(cause)"
        }
    }

    public var hint: String? {
        switch problem {
        case .symbolicLink, .notADirectory, .notARegularFile, .hardLinked:
            "someone else may have planted it: inspect it, remove it (rm \(path)), and try again"
        case .wrongOwner(_, _, let expected):
            "if it is yours: chown \(expected) \(path); if not, remove it or use another $TETHER_HOME"
        case .writableByOthers:
            "chmod 700 \(path)"
        case .failed:
            nil
        }
    }

    public var description: String { message + (hint.map { "\n-> " + $0 } ?? "") }

    static func octal(_ mode: UInt32) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
