#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherProtocol

/// One `--wait-log` expression, compiled by the C library's regcomp(3) (POSIX extended
/// syntax). Swift's Regex would add its runtime (about a megabyte) to the static agent.
///
/// Owns the compiled expression and frees it once. Lives on the agent's loop thread.
final class LogPattern {
    let source: String
    private let compiled: UnsafeMutableRawPointer

    /// Compiles `source`; a bad expression is refused with regerror(3)'s words.
    init(_ source: String) throws(RequestError) {
        var code: CInt = 0
        var message = [CChar](repeating: 0, count: 256)
        guard let compiled = csys_regex_compile(source, &code, &message, message.count) else {
            let text = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw RequestError(.badPayload, "ready.logs: '\(source)' is not a POSIX extended regular expression: \(text)")
        }
        self.source = source
        self.compiled = compiled
    }

    deinit { csys_regex_free(compiled) }

    /// Whether the line (without its newline) matches. A NUL byte ends the text regexec sees.
    func matches(_ line: [UInt8]) -> Bool {
        var text = line
        text.append(0)
        return text.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { csys_regex_matches(compiled, $0.baseAddress!) == 1 }
        }
    }
}

/// Splits one stream's output into lines across reads: a line written in two writes (or read
/// in two reads) is matched once, whole. A line longer than `maxLineBytes` is matched on its
/// first `maxLineBytes` bytes. Lives on the agent's loop thread.
struct LineSplitter {
    static let maxLineBytes = 64 << 10
    private var partial: [UInt8] = []
    /// The current line grew past the limit and was matched already: skip to its newline.
    private var skipping = false

    /// Calls `line` for every line completed by `bytes` (newline and a trailing CR removed).
    mutating func feed(_ bytes: UnsafeRawBufferPointer, _ line: ([UInt8]) -> Void) {
        var rest = bytes[...]
        while let newline = rest.firstIndex(of: 0x0A) {
            if !skipping { partial.append(contentsOf: rest[rest.startIndex..<newline]) }
            if !skipping { line(partial.last == 0x0D ? Array(partial.dropLast()) : partial) }
            partial.removeAll(keepingCapacity: true)
            skipping = false
            rest = rest[(newline + 1)...]
        }
        guard !skipping else { return }
        partial.append(contentsOf: rest.prefix(Self.maxLineBytes - partial.count))
        if partial.count >= Self.maxLineBytes {
            line(partial)
            partial.removeAll(keepingCapacity: true)
            skipping = true
        }
    }

    /// The stream ended: an unterminated last line still counts.
    mutating func finish(_ line: ([UInt8]) -> Void) {
        if !partial.isEmpty && !skipping { line(partial) }
        partial.removeAll()
        skipping = false
    }
}
