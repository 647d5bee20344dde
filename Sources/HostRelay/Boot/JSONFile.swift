import Foundation
import TetherPosix

/// Small JSON files of host state (config.json, state.json, boot-error.json).
///
/// Written atomically through a fresh temporary (O_EXCL|O_NOFOLLOW) renamed over the old file,
/// so a reader never sees half a file and a link planted at the name is replaced, not
/// followed. Read without following a link at the name, only from a regular file, and at most
/// `readLimit` bytes (a FIFO or a huge file in its place must not hang or exhaust the reader).
enum JSONFile {
    static let readLimit = 1 << 20

    static func write<T: Encodable>(_ value: T, to url: URL, sortedKeysOnly: Bool = false) throws(JSONFileError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = sortedKeysOnly ? [.sortedKeys] : [.prettyPrinted, .sortedKeys]
        var data: Data
        do { data = try encoder.encode(value) } catch { throw .encoding("\(error)") }
        data.append(0x0A)
        do { try PrivateFiles.writeAtomically(Array(data), to: url.path, mode: 0o644) } catch { throw .file(error) }
    }

    /// The decoded file. `anyOwner`: a file the guest may have written (seen from the host).
    static func read<T: Decodable>(_ type: T.Type, from url: URL, anyOwner: Bool = false) throws(JSONFileError) -> T {
        let bytes: [UInt8]
        do { bytes = try PrivateFiles.read(url.path, limit: readLimit, anyOwner: anyOwner) } catch { throw .file(error) }
        return try decode(T.self, from: bytes)
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws(JSONFileError) -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch { throw .decoding("\(error)") }
    }
}

/// Why a JSON file of host state could not be written or read.
enum JSONFileError: Error, Equatable, CustomStringConvertible {
    case file(UnsafePathError)
    case encoding(String)
    case decoding(String)

    var description: String {
        switch self {
        case .file(let error): error.message
        case .encoding(let why): "encoding failed: \(why)"
        case .decoding(let why): "not valid JSON of the expected shape: \(why)"
        }
    }
}
