#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

/// A fresh directory under /tmp with a short path (unix socket paths must stay under 108
/// bytes), removed with everything in it on `remove()` or deinit.
public final class TemporaryDirectory: @unchecked Sendable {
    public let path: String

    public init(_ prefix: String = "tether") throws {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        path = String(cString: made)
    }

    deinit { remove() }

    public func remove() { try? FileManager.default.removeItem(atPath: path) }

    /// `path/name`.
    public func file(_ name: String) -> String { path + "/" + name }

    /// Writes a file (with `mode`, parent directories made) and returns its path.
    @discardableResult
    public func write(_ name: String, _ contents: String, mode: mode_t = 0o644) throws -> String {
        let file = file(name)
        try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try writeFile(file, bytes: Array(contents.utf8), mode: mode)
        return file
    }
}

/// Creates `path` with `bytes` and `mode`, written by a separate `cp` process.
///
/// Tests start processes from other threads at any time, and a child forked while this process
/// holds a write descriptor to a file keeps that descriptor until its own exec, O_CLOEXEC or
/// not. execve of the file (a program, or a script) meanwhile fails with ETXTBSY (seen: unshare
/// could not execute a freshly copied agent). So the bytes go to a private staging file, and
/// `cp`, which forks nothing, writes the file that will be executed.
public func writeFile(_ path: String, bytes: [UInt8], mode: mode_t) throws {
    let staging = path + ".staging-\(getpid())-\(UInt32.random(in: 0 ... .max))"
    defer { unlink(staging) }
    let fd = open(staging, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw ClientError("open \(staging): errno \(errno)") }
    var offset = 0
    do {
        defer { close(fd) }
        try bytes.withUnsafeBytes { raw in
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw ClientError("write \(staging): errno \(errno)") }
                offset += n
            }
        }
    }
    try copyFile(staging, to: path, mode: mode)
}

/// Copies `source` to a new file `target` with `mode`, through `cp` (see `writeFile` for why).
public func copyFile(_ source: String, to target: String, mode: mode_t) throws {
    unlink(target)   // cp would otherwise write into an existing file (and its inode) in place
    let copy = try runCommand(["/bin/cp", source, target])
    guard copy.status == 0 else { throw ClientError("cp \(source) \(target): \(copy.output)") }
    // cp's new file has the source's mode masked by the umask; the caller asked for exactly this one.
    guard chmod(target, mode) == 0 else { throw ClientError("chmod \(target): errno \(errno)") }
}
