#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherProtocol

/// Turns log entries into exec.log lines (JSON Lines). Runs on the log writer's thread only.
///
/// Every line is one JSON object whose first two keys are always `time` and `session`:
///
///     {"time":"2025-01-31T12:00:00.123456Z","session":12,"stream":"stdout","data":"hi\n"}
///     {"time":"...","session":12,"stream":"stdout","base64":"/w=="}
///     {"time":"...","session":12,"event":"exited","code":0}
///
/// - `time`: UTC, RFC 3339 with microseconds, when the relay saw the bytes.
/// - `session`: the relay's session number (what `tether ps` shows); 0 for relay-level lines.
/// - Data lines have `stream` (`stdout`, `stderr`, `stdin`) and either `data` (the bytes, when
///   they are valid UTF-8, as a JSON string) or `base64` (RFC 4648 with padding, when they are
///   not). A UTF-8 sequence split across two frames is carried to the next line of the same
///   stream, so text stays text; what is still carried when the session ends is written as a
///   `base64` line.
/// - Marker lines have `event`: `exec` (`argv`, `cwd`, `user`, `tty`, `stdin`, `detach`),
///   `started` (`pid`), `exited` (`code` or `signal`, `coreDumped`, `timedOut` when the timeout ended it), `failed` (`kind`, `errno`,
///   `stage`, `message`), `error` (`code`, `message`), `end`, `attached` (`droppedBytes`),
///   `detached`, `killed` (`reason`), relay markers on session 0 (`relayStarted`,
///   `agentConnected`, `agentGone`, ...; `detail`), and `logDropped` (`entries`, `bytes`) when
///   the writer's queue was full and lines were lost.
struct LogLineEncoder {
    /// Partial UTF-8 sequences carried per session and stream.
    private var carry: [CarryKey: [UInt8]] = [:]

    private struct CarryKey: Hashable {
        let session: UInt32
        let stream: LogStream
    }

    /// Appends the line(s) for one entry to `out` (each ends with a newline).
    mutating func encode(timeNs: UInt64, session: UInt32, event: LogEvent, into out: inout [UInt8]) {
        if event.endsSession { flushCarry(timeNs: timeNs, session: session, into: &out) }
        var line = JSONObject()
        line.string("time", Self.timestamp(ns: timeNs))
        line.integer("session", Int64(session))
        switch event {
        case .data(let stream, let bytes):
            line.string("stream", stream.rawValue)
            let key = CarryKey(session: session, stream: stream)
            var combined = carry.removeValue(forKey: key) ?? []
            combined += bytes
            let tail = Self.incompleteTailCount(combined)
            let body = combined[..<(combined.count - tail)]
            if String(validating: body, as: UTF8.self) != nil {
                line.utf8String("data", body)
                if tail > 0 { carry[key] = Array(combined[(combined.count - tail)...]) }
            } else {
                line.string("base64", Base64.encode(combined[...]))
            }
        case .exec(let argv, let cwd, let user, let tty, let stdin, let detach):
            line.string("event", "exec")
            line.strings("argv", argv)
            if let cwd { line.string("cwd", cwd) }
            if let user { line.string("user", user) }
            line.bool("tty", tty)
            line.bool("stdin", stdin)
            line.bool("detach", detach)
        case .started(let pid):
            line.string("event", "started")
            line.integer("pid", Int64(pid))
        case .exited(let exited):
            line.string("event", "exited")
            if let code = exited.code { line.integer("code", Int64(code)) }
            if let signal = exited.signal { line.integer("signal", Int64(signal)) }
            line.bool("coreDumped", exited.coreDumped)
            if exited.timedOut { line.bool("timedOut", true) }
        case .failed(let failed):
            line.string("event", "failed")
            line.string("kind", failed.kind.rawValue)
            line.integer("errno", Int64(failed.errno))
            line.string("stage", failed.stage.rawValue)
            line.string("message", failed.message)
        case .error(let code, let message):
            line.string("event", "error")
            line.string("code", code)
            line.string("message", message)
        case .end:
            line.string("event", "end")
        case .attached(let dropped):
            line.string("event", "attached")
            line.integer("droppedBytes", Int64(clamping: dropped))
        case .detached:
            line.string("event", "detached")
        case .killed(let reason):
            line.string("event", "killed")
            line.string("reason", reason)
        case .relay(let name, let detail):
            line.string("event", name)
            if !detail.isEmpty { line.string("detail", detail) }
        case .logDropped(let entries, let bytes):
            line.string("event", "logDropped")
            line.integer("entries", Int64(clamping: entries))
            line.integer("bytes", Int64(clamping: bytes))
        }
        line.close(into: &out)
    }

    private mutating func flushCarry(timeNs: UInt64, session: UInt32, into out: inout [UInt8]) {
        for stream in [LogStream.stdout, .stderr, .stdin] {
            guard let rest = carry.removeValue(forKey: CarryKey(session: session, stream: stream)) else { continue }
            var line = JSONObject()
            line.string("time", Self.timestamp(ns: timeNs))
            line.integer("session", Int64(session))
            line.string("stream", stream.rawValue)
            line.string("base64", Base64.encode(rest[...]))
            line.close(into: &out)
        }
    }

    /// How many bytes at the end start a UTF-8 sequence that is not complete yet (0-3).
    static func incompleteTailCount(_ bytes: [UInt8]) -> Int {
        var i = bytes.count - 1
        var continuation = 0
        while i >= 0 && continuation < 3 && bytes[i] & 0xC0 == 0x80 {
            continuation += 1
            i -= 1
        }
        guard i >= 0 else { return 0 }
        let lead = bytes[i]
        let expected: Int
        switch lead {
        case 0xC2...0xDF: expected = 2
        case 0xE0...0xEF: expected = 3
        case 0xF0...0xF4: expected = 4
        default: return 0
        }
        let have = bytes.count - i
        return have < expected ? have : 0
    }

    /// `2025-01-31T12:00:00.123456Z` from nanoseconds since the epoch.
    static func timestamp(ns: UInt64) -> String {
        var seconds = time_t(ns / 1_000_000_000)
        let micros = Int((ns % 1_000_000_000) / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int, _ width: Int) -> String {
            let text = String(value)
            return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
        }
        return "\(pad(Int(parts.tm_year) + 1900, 4))-\(pad(Int(parts.tm_mon) + 1, 2))-\(pad(Int(parts.tm_mday), 2))T"
            + "\(pad(Int(parts.tm_hour), 2)):\(pad(Int(parts.tm_min), 2)):\(pad(Int(parts.tm_sec), 2)).\(pad(micros, 6))Z"
    }
}

/// Writes one JSON object on one line, keys in the order given.
struct JSONObject {
    private var bytes: [UInt8] = [UInt8(ascii: "{")]
    private var first = true

    init() {}

    private mutating func key(_ name: String) {
        if !first { bytes.append(UInt8(ascii: ",")) }
        first = false
        JSONObject.appendQuoted(name.utf8, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
    }

    mutating func string(_ name: String, _ value: String) {
        key(name)
        JSONObject.appendQuoted(value.utf8, to: &bytes)
    }

    /// Bytes already known to be valid UTF-8.
    mutating func utf8String(_ name: String, _ value: ArraySlice<UInt8>) {
        key(name)
        JSONObject.appendQuoted(value, to: &bytes)
    }

    mutating func strings(_ name: String, _ values: [String]) {
        key(name)
        bytes.append(UInt8(ascii: "["))
        for (i, value) in values.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            JSONObject.appendQuoted(value.utf8, to: &bytes)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    mutating func integer(_ name: String, _ value: Int64) {
        key(name)
        bytes.append(contentsOf: String(value).utf8)
    }

    mutating func bool(_ name: String, _ value: Bool) {
        key(name)
        bytes.append(contentsOf: (value ? "true" : "false").utf8)
    }

    /// Closes the object and appends it, with a newline, to `out`.
    mutating func close(into out: inout [UInt8]) {
        bytes.append(UInt8(ascii: "}"))
        bytes.append(UInt8(ascii: "\n"))
        out += bytes
    }

    /// A JSON string: quotes, backslashes and control characters escaped, the rest (valid
    /// UTF-8) copied as is, in runs.
    static func appendQuoted<C: Collection<UInt8>>(_ bytes: C, to out: inout [UInt8]) {
        let done: Void? = bytes.withContiguousStorageIfAvailable { buffer in
            appendQuoted(UnsafeRawBufferPointer(buffer), to: &out)
        }
        if done == nil { Array(bytes).withUnsafeBytes { appendQuoted($0, to: &out) } }
    }

    static func appendQuoted(_ raw: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        // Sized first, then copied through pointers from a table of escapes: byte-wise
        // appends are slow in the unoptimized builds the tests run.
        var length = 2
        for i in 0..<raw.count { length += Int(escapeLengths[Int(raw[i])]) }
        let quoted = [UInt8](unsafeUninitializedCapacity: length) { buffer, initialized in
            escapeTable.withUnsafeBufferPointer { table in
                escapeLengths.withUnsafeBufferPointer { lengths in
                    var to = buffer.baseAddress!
                    to.pointee = 0x22
                    to += 1
                    for i in 0..<raw.count {
                        let byte = Int(raw[i])
                        let count = Int(lengths[byte])
                        to.update(from: table.baseAddress! + byte * 6, count: count)
                        to += count
                    }
                    to.pointee = 0x22
                }
            }
            initialized = length
        }
        out += quoted
    }

    /// For each byte value, its JSON form in a 6-byte slot (`a`, `\n`, `\u001b`)...
    private static let escapeTable: [UInt8] = (0..<256).flatMap { value -> [UInt8] in
        let hex = Array("0123456789abcdef".utf8)
        var form: [UInt8]
        switch value {
        case 0x22: form = Array(#"\""#.utf8)
        case 0x5C: form = Array(#"\\"#.utf8)
        case 0x0A: form = Array(#"\n"#.utf8)
        case 0x0D: form = Array(#"\r"#.utf8)
        case 0x09: form = Array(#"\t"#.utf8)
        case 0..<0x20, 0x7F: form = Array(#"\u00"#.utf8) + [hex[value >> 4], hex[value & 0xF]]
        default: form = [UInt8(value)]
        }
        return form + [UInt8](repeating: 0, count: 6 - form.count)
    }
    /// ...and how many of the slot's bytes it is.
    private static let escapeLengths: [UInt8] = (0..<256).map { value -> UInt8 in
        switch value {
        case 0x22, 0x5C, 0x0A, 0x0D, 0x09: 2
        case 0..<0x20, 0x7F: 6
        default: 1
        }
    }
}

/// RFC 4648 base64 with padding.
enum Base64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ bytes: ArraySlice<UInt8>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let b0 = UInt32(bytes[i])
            let b1 = i + 1 < bytes.endIndex ? UInt32(bytes[i + 1]) : 0
            let b2 = i + 2 < bytes.endIndex ? UInt32(bytes[i + 2]) : 0
            let n = b0 << 16 | b1 << 8 | b2
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(i + 1 < bytes.endIndex ? alphabet[Int(n >> 6 & 63)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.endIndex ? alphabet[Int(n & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}
