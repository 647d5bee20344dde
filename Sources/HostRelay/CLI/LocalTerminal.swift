#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization
import TetherProtocol

/// The local terminal of an interactive session: raw mode while the session runs, and the
/// saved settings put back on every way out. The remote side has its own pty whose line
/// discipline echoes, edits lines and turns ctrl-C into SIGINT, so the local one must pass
/// every byte through untouched (and not do any of that a second time).
///
/// The saved settings live in one process-wide slot so the signal thread can restore them
/// before the CLI dies of SIGTERM or SIGHUP (`SignalWatcher`), and `exit` paths can too.
enum LocalTerminal {
    private static let saved = Mutex<(fd: Int32, settings: termios)?>(nil)

    static func isTerminal(_ fd: Int32) -> Bool { isatty(fd) == 1 }

    /// The window size of `fd` (a terminal), or nil.
    static func size(of fd: Int32) -> TerminalSize? {
        var size = winsize()
        guard ioctl(fd, UInt(TIOCGWINSZ), &size) == 0, size.ws_row > 0, size.ws_col > 0 else { return nil }
        return TerminalSize(rows: size.ws_row, cols: size.ws_col)
    }

    /// The size for a remote pty: this terminal's (stdout, else stdin), else 24x80.
    static var currentSize: TerminalSize { size(of: 1) ?? size(of: 0) ?? TerminalSize(rows: 24, cols: 80) }

    /// Puts `fd` in raw mode, remembering how it was. False if it is not a terminal.
    @discardableResult
    static func enterRawMode(_ fd: Int32 = 0) -> Bool {
        var original = termios()
        guard tcgetattr(fd, &original) == 0 else { return false }
        var raw = original
        cfmakeraw(&raw)
        // Reads wait for at least one byte, as a terminal in canonical mode would.
        raw.c_cc.6 = 1   // VMIN
        raw.c_cc.5 = 0   // VTIME
        saved.withLock { if $0 == nil { $0 = (fd, original) } }
        while tcsetattr(fd, TCSADRAIN, &raw) != 0 {
            if errno != EINTR { return false }
        }
        return true
    }

    /// Raw mode is on (output needs "\r\n" for a new line: the terminal no longer adds "\r").
    static var isRaw: Bool { saved.withLock { $0 != nil } }

    /// Puts the saved settings back (once; later calls do nothing). Safe from any thread.
    static func restore() {
        guard var entry = saved.withLock({ slot -> (fd: Int32, settings: termios)? in
            defer { slot = nil }
            return slot
        }) else { return }
        while tcsetattr(entry.fd, TCSADRAIN, &entry.settings) != 0 && errno == EINTR {}
    }
}

/// The key sequence that detaches from an interactive session, as `--detach-key` spells it:
/// keys separated by commas, each `ctrl-X` (X a letter or one of `@[\]^_`) or one
/// character; `none` turns detaching off. Default `ctrl-]`, as telnet's escape.
struct DetachKeys: Sendable {
    let bytes: [UInt8]
    static let defaultSpelling = "ctrl-]"

    init(parsing text: String, command: String) throws(UsageError) {
        if text == "none" || text.isEmpty {
            bytes = []
            return
        }
        var result: [UInt8] = []
        for key in text.split(separator: ",", omittingEmptySubsequences: false) {
            let lower = key.lowercased()
            if lower.hasPrefix("ctrl-"), key.count == 6, let last = key.last?.asciiValue {
                let upper = (last >= 0x61 && last <= 0x7A) ? last - 0x20 : last
                guard (0x40...0x5F).contains(upper) else {
                    throw UsageError(message: "--detach-key: '\(key)' is not a control key (ctrl-a..ctrl-z, ctrl-@, ctrl-[, ctrl-\\, ctrl-], ctrl-^, ctrl-_)", command: command)
                }
                result.append(upper - 0x40)
            } else if key.count == 1, let ascii = key.first?.asciiValue {
                result.append(ascii)
            } else {
                throw UsageError(message: "--detach-key: '\(key)' is not a key (like ctrl-] or ctrl-p,ctrl-q)", command: command)
            }
        }
        bytes = result
    }

    /// A human spelling for the hint line.
    var description: String {
        bytes.map { byte in byte < 0x20 ? "ctrl-" + String(UnicodeScalar(byte + 0x40)) : String(UnicodeScalar(byte)) }
            .joined(separator: ",")
    }
}

/// Finds the detach sequence in the input stream, across reads. Bytes of a partial match are
/// held back until the match fails (then they go out) or completes (then they are dropped).
struct DetachMatcher {
    let keys: [UInt8]
    private var matched = 0

    init(_ keys: DetachKeys) { self.keys = keys.bytes }

    /// Splits a chunk: what to forward, and whether the sequence was completed in it.
    mutating func feed(_ chunk: ArraySlice<UInt8>) -> (forward: [UInt8], detach: Bool) {
        guard !keys.isEmpty else { return (Array(chunk), false) }
        var forward: [UInt8] = []
        for byte in chunk {
            if byte == keys[matched] {
                matched += 1
                if matched == keys.count { return (forward, true) }
                continue
            }
            // A failed partial match: its bytes were input after all.
            forward += keys[0..<matched]
            matched = 0
            if byte == keys[0] {
                matched = 1
                if matched == keys.count { return (forward, true) }
            } else {
                forward.append(byte)
            }
        }
        return (forward, false)
    }
}
