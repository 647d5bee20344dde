#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix

/// The lock that makes a sandbox name taken: flock(2) LOCK_EX on `lock` in the sandbox's
/// directory, held by the sandbox's supervisor (the descriptor is handed to it) for as long as
/// the sandbox lives. The kernel drops it when the holder dies however it dies, so a crashed
/// supervisor never leaves a name taken, and no pid in a file is trusted to say who is alive.
///
/// Owns one descriptor; `release()` hands it over (to the supervisor) without unlocking.
public struct NameLock: ~Copyable {
    public let fd: OwnedFD

    /// Takes the lock without waiting; nil when another process holds it.
    public static func tryAcquire(_ path: String) throws(Errno) -> NameLock? {
        let fd = OwnedFD(adopting: try retrying { open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644) })
        while flock(fd.raw, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            if code == EINTR { continue }
            if code == EWOULDBLOCK { return nil }
            throw Errno(rawValue: code)
        }
        return NameLock(fd: fd)
    }

    /// Whether a live process holds the lock (a shared probe that is released at once).
    public static func isHeld(_ path: String) -> Bool {
        let raw = open(path, O_RDONLY | O_CLOEXEC)
        guard raw >= 0 else { return false }
        let fd = OwnedFD(adopting: raw)
        while flock(fd.raw, LOCK_SH | LOCK_NB) != 0 {
            if errno == EINTR { continue }
            return errno == EWOULDBLOCK
        }
        return false   // closing fd releases the probe
    }

    /// Adopts an inherited descriptor that already holds the lock (the supervisor's side).
    public init(adopting fd: CInt) { self.fd = OwnedFD(adopting: fd) }

    private init(fd: consuming OwnedFD) { self.fd = fd }
}
