#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix

/// One-line diagnostics on stderr (the console when the agent is PID 1). Each line is written
/// with a single write(2) so lines from the agent and its init never interleave mid-line.
enum Log {
    static func info(_ message: String) { write("tether-agent: " + message + "\n") }
    static func warning(_ message: String) { write("tether-agent: warning: " + message + "\n") }

    private static func write(_ line: String) {
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(2, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                offset += n
            }
        }
    }
}

extension EventLoop {
    /// `unwatch`, with its EPOLL_CTL_DEL failure logged: it fails only when the descriptor was
    /// closed before it was unwatched, a bug worth seeing; the registration is gone either way.
    func unwatch(_ fd: CInt, _ what: @autoclosure () -> String) {
        if let failure = unwatch(fd) { Log.warning("cannot stop watching \(what()) (descriptor \(fd)): \(failure)") }
    }
}
