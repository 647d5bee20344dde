#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherPosix
import TetherProtocol

/// The exposed ports of a sandbox on disk (`ports.json` beside `state.json`), so that a relay
/// that is restarted listens on the same host ports again. The supervisor removes the file
/// when the sandbox ends: ports end with their sandbox.
///
/// Written whole to a fresh temporary file (O_EXCL, O_NOFOLLOW) renamed over the old one, so a
/// reader sees the old list or the new one, and a planted link is never followed.
struct PortsFile {
    struct Entry: Codable, Equatable {
        var guestPort: UInt16
        var hostAddr: String
        var hostPort: UInt16
        var name: String?
    }

    struct Contents: Codable {
        var version = 1
        var ports: [Entry]
    }

    enum Failure: Error, CustomStringConvertible {
        case read(path: String, String)
        case write(path: String, operation: String, Errno)

        var description: String {
            switch self {
            case .read(let path, let why): "reading \(path): \(why)"
            case .write(let path, let operation, let error): "writing \(path): \(operation): \(error)"
            }
        }
    }

    let path: String

    /// The saved entries; none when the file does not exist.
    func load() throws(Failure) -> [Entry] {
        guard let data = FileManager.default.contents(atPath: path) else {
            if access(path, F_OK) != 0 && errno == ENOENT { return [] }
            throw .read(path: path, "cannot read it")
        }
        do { return try JSONDecoder().decode(Contents.self, from: data).ports } catch {
            throw .read(path: path, "\(error)")
        }
    }

    func save(_ entries: [Entry]) throws(Failure) {
        let data: Data
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            data = try encoder.encode(Contents(ports: entries))
        } catch {
            throw .read(path: path, "encoding: \(error)")
        }
        let temporary = path + ".tmp-\(getpid())"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .write(path: temporary, operation: "open", .current) }
        let written = data.withUnsafeBytes { raw -> Errno? in
            do throws(Errno) { try FileIO.writeAll(fd, raw) } catch { return error }
            return nil
        }
        if let written {
            close(fd)
            unlink(temporary)
            throw .write(path: temporary, operation: "write", written)
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let error = Errno.current
            unlink(temporary)
            throw .write(path: path, operation: "rename", error)
        }
    }
}
