import Foundation
import TetherProtocol

/// What `--json` listings print: one JSON value on one line with its keys sorted, so a script
/// (or a test) sees the same text for the same data.
enum JSONText {
    /// `object` as JSON; `fallback` for what JSONSerialization cannot encode.
    static func render(_ object: Any, fallback: String = "null") -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data(fallback.utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// How a program ended, as `ps --json` and `proc ls --json` show it.
    static func exited(_ exited: Exited) -> [String: Any] {
        var status: [String: Any] = ["coreDumped": exited.coreDumped]
        if let code = exited.code { status["code"] = code }
        if let signal = exited.signal { status["signal"] = signal }
        return status
    }
}
