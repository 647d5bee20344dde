import TetherProtocol

/// A request's path made absolute: the agent is PID 1 in the guest's root, so a plain path is
/// the guest's own. Relative paths are joined to `cwd` (default "/"). The bytes are kept as
/// they came (a name need not be UTF-8) and handed to C as a NUL-terminated array.
struct FilePath: Equatable {
    /// As the client sent it, for errors.
    let given: OSString
    /// Absolute, without NUL bytes.
    let bytes: [UInt8]

    init(_ path: OSString, cwd: OSString?) throws(FileFailure) {
        given = path
        guard !path.bytes.isEmpty else { throw FileFailure(.invalidPath, op: "resolve", path: path, "the path is empty") }
        guard !path.containsNUL, !(cwd?.containsNUL ?? false) else {
            throw FileFailure(.invalidPath, op: "resolve", path: path, "a path cannot hold a NUL byte")
        }
        var bytes = path.bytes
        if bytes.first != UInt8(ascii: "/") {
            var base = cwd?.bytes ?? [UInt8(ascii: "/")]
            if base.first != UInt8(ascii: "/") { base.insert(UInt8(ascii: "/"), at: 0) }
            if base.last != UInt8(ascii: "/") { base.append(UInt8(ascii: "/")) }
            bytes = base + bytes
        }
        self.bytes = bytes
    }

    init(bytes: [UInt8], given: OSString) {
        self.bytes = bytes
        self.given = given
    }

    /// NUL-terminated, for the system calls.
    var c: [CChar] { bytes.map { CChar(bitPattern: $0) } + [0] }

    /// The directory part ("/" for "/x") and the last component ("" for "/").
    var split: (directory: FilePath, name: [UInt8]) {
        var trimmed = bytes[...]
        while trimmed.count > 1 && trimmed.last == UInt8(ascii: "/") { trimmed = trimmed.dropLast() }
        let slash = trimmed.lastIndex(of: UInt8(ascii: "/"))!   // absolute: there is one
        let directory = slash == trimmed.startIndex ? [UInt8(ascii: "/")] : Array(trimmed[..<slash])
        return (FilePath(bytes: directory, given: given), Array(trimmed[(slash + 1)...]))
    }

    func child(_ name: [UInt8]) -> FilePath {
        FilePath(bytes: (bytes.last == UInt8(ascii: "/") ? bytes : bytes + [UInt8(ascii: "/")]) + name, given: given)
    }

    var os: OSString { OSString(bytes: bytes) }
}

extension Array where Element == UInt8 {
    var cString: [CChar] { map { CChar(bitPattern: $0) } + [0] }
}
