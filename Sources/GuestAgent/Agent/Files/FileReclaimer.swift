#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import Synchronization
import TetherPosix

/// Frees the blocks of large files the agent removes or replaces on a thread of its own, not
/// on the loop thread that serves every session.
///
/// The kernel frees a file's blocks when the last reference to its inode goes, inside the
/// call that drops it: unlink(2) or rename(2) over it when nothing else holds it, else the
/// close(2) of the last descriptor. On ext4 that took 0.3 s per GiB here, and the agent's one
/// loop thread would stall every session for as long. So before such a call the agent pins a
/// large regular file with an O_PATH descriptor (unlink then returns in microseconds), and
/// hands the descriptor to this thread, whose close(2) does the freeing. The same for an
/// upload's own temporary file when it is given up.
///
/// Owns the descriptors handed to it until it has closed them, and the thread (started on
/// first use; it lives as long as the agent).
enum FileReclaimer {
    /// Files with at least this many bytes allocated are pinned; smaller ones free fast enough.
    static let pinBytes = 8 << 20

    /// Descriptors closed by the thread so far (for tests).
    static let closedCount = Atomic<Int>(0)

    /// The write end of the pipe that carries descriptor numbers to the thread, or -1 when no
    /// thread could be had (then every release closes at once, as before).
    private static let queue: CInt = startThread()

    /// A descriptor that keeps the regular file `name` (under `directory`, not through a
    /// final symlink) alive past its last link, when it holds at least `pinBytes`; nil for
    /// anything else (missing, small, not a regular file).
    static func pin(_ name: UnsafePointer<CChar>, in directory: CInt = AT_FDCWD) -> CInt? {
        let fd = openat(directory, name, csys_o_path() | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        if holdsManyBlocks(fd) { return fd }
        close(fd)
        return nil
    }

    /// Whether the file open as `fd` is a regular file with at least `pinBytes` allocated.
    static func holdsManyBlocks(_ fd: CInt) -> Bool {
        var st = Glibc.stat()
        guard fstat(fd, &st) == 0 else { return false }
        return st.st_mode & S_IFMT == S_IFREG && Int(st.st_blocks) * 512 >= pinBytes
    }

    /// Closes a descriptor whose file may be losing its last reference (an upload's temporary
    /// file given up): on the reclaimer's thread when the file is large, at once otherwise.
    static func dispose(_ fd: CInt) {
        if holdsManyBlocks(fd) { release(fd) } else { close(fd) }
    }

    /// Closes `fd` on the reclaimer's thread (at once when the thread cannot take it).
    static func release(_ fd: CInt) {
        var number = fd
        let written = queue >= 0 ? withUnsafeBytes(of: &number) { Glibc.write(queue, $0.baseAddress, $0.count) } : -1
        if written != MemoryLayout<CInt>.size { close(fd) }
    }

    private static func startThread() -> CInt {
        guard let pipe = try? Pipe() else { return -1 }
        let readEnd = pipe.readEnd.release()
        let writeEnd = pipe.writeEnd.release()
        // The loop thread must never wait for this one: with the pipe full (16,384 descriptors
        // waiting), a release closes at once instead.
        _ = try? FileIO.setNonBlocking(writeEnd)
        DedicatedThread.start(named: "tether-reclaim") {
            var number: CInt = -1
            while true {
                let n = withUnsafeMutableBytes(of: &number) { Glibc.read(readEnd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n == MemoryLayout<CInt>.size else { return }
                close(number)
                closedCount.add(1, ordering: .releasing)
            }
        }
        return writeEnd
    }
}
