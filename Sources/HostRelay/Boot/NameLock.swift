#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherPosix

/// The lock that makes a sandbox name taken: flock(2) LOCK_EX on `lock` in the sandbox's
/// directory, held by the sandbox's supervisor (the descriptor is handed to it) for as long as
/// the sandbox lives. The kernel drops it when the holder dies however it dies, so a crashed
/// supervisor never leaves a name taken, and no pid in a file is trusted to say who is alive.
///
/// The file is opened with O_NOFOLLOW and must be a regular file of ours (`PrivateFiles`).
///
/// Owns one descriptor; `release()` hands it over (to the supervisor) without unlocking.
public struct NameLock: ~Copyable {
    public let fd: OwnedFD

    /// Takes the lock without waiting; nil when another process holds it.
    public static func tryAcquire(_ path: String) throws(UnsafePathError) -> NameLock? {
        let fd = try PrivateFiles.openForUpdate(path, mode: 0o644)
        while flock(fd.raw, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            if code == EINTR { continue }
            if code == EWOULDBLOCK { return nil }
            throw UnsafePathError(path: path, problem: .failed(operation: "flock", Errno(rawValue: code)))
        }
        return NameLock(fd: fd)
    }

    /// Whether a live process holds the lock (a shared probe that is released at once).
    public static func isHeld(_ path: String) -> Bool {
        guard let fd = try? PrivateFiles.openForReading(path) else { return false }
        while flock(fd.raw, LOCK_SH | LOCK_NB) != 0 {
            if errno == EINTR { continue }
            return errno == EWOULDBLOCK
        }
        return false   // closing fd releases the probe
    }

    /// Whether process `pid` holds the lock on `path` through one of its descriptors: one of
    /// /proc/PID/fd leads to the lock file's inode, and its /proc/PID/fdinfo shows a write
    /// flock on it (proc(5): fdinfo lists the locks held through that open file only). A pid
    /// read from a file cannot fake this; only the supervisor that holds the name passes.
    public static func isHeld(_ path: String, by pid: pid_t) -> Bool {
        guard let lockFile = try? PrivateFiles.openForReading(path) else { return false }
        var lockStat = stat()
        guard fstat(lockFile.raw, &lockStat) == 0 else { return false }
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        for descriptor in descriptors where Int(descriptor) != nil {
            var st = stat()
            // stat(2) of /proc/PID/fd/N reaches the open file itself, whatever its path now is.
            guard stat("/proc/\(pid)/fd/\(descriptor)", &st) == 0,
                  st.st_dev == lockStat.st_dev, st.st_ino == lockStat.st_ino,
                  let info = try? FileIO.readFile("/proc/\(pid)/fdinfo/\(descriptor)", limit: 64 << 10) else { continue }
            let lines = String(decoding: info, as: UTF8.self).split(separator: "\n")
            if lines.contains(where: { $0.hasPrefix("lock:") && $0.contains("FLOCK") && $0.contains("WRITE") }) { return true }
        }
        return false
    }

    /// Adopts an inherited descriptor that already holds the lock (the supervisor's side).
    public init(adopting fd: CInt) { self.fd = OwnedFD(adopting: fd) }

    private init(fd: consuming OwnedFD) { self.fd = fd }
}
