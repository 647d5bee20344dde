/// A command line as one line of terminal-safe text: what `tether ps` and messages show.
///
/// Arguments come from the guest or from other clients: a control character (ESC, a newline,
/// a carriage return) printed raw would break a table or drive the terminal. Each is written as
/// an escape (`\n`, `\t`, `\e`, `\xNN`), a backslash as `\\`, and an argument that is empty or
/// holds a space or a quote is quoted, so the words can be told apart.
enum CommandLineText {
    static func render(_ argv: [String]) -> String {
        argv.map(renderArgument).joined(separator: " ")
    }

    static func renderArgument(_ argument: String) -> String {
        var out = ""
        for scalar in argument.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{1B}": out += "\\e"
            case "'": out += "\\'"
            default:
                // C0 controls, DEL and the C1 controls (0x80-0x9F: some terminals act on them too).
                if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\x" + (hex.count < 2 ? "0" : "") + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        let needsQuotes = argument.isEmpty || argument.contains(" ") || argument.contains("'") || argument.contains("\"")
        return needsQuotes ? "'" + out + "'" : out
    }
}
