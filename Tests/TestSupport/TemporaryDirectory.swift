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

/// Creates `path` with `bytes` through a CLOEXEC descriptor. Tests start processes from other
/// threads at any time: a child forked while a plain write descriptor to the file is open keeps
/// it open, and execve of that file (a program, or a script) then fails with ETXTBSY.
public func writeFile(_ path: String, bytes: [UInt8], mode: mode_t) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else { throw ClientError("open \(path): errno \(errno)") }
    defer { close(fd) }
    // The mode given to open(2) is masked by the umask; the caller asked for exactly this one.
    guard fchmod(fd, mode) == 0 else { throw ClientError("chmod \(path): errno \(errno)") }
    var offset = 0
    try bytes.withUnsafeBytes { raw in
        while offset < raw.count {
            let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw ClientError("write \(path): errno \(errno)") }
            offset += n
        }
    }
}
