import TetherPosix

/// A `tty` session's pseudo-terminal master: the output reads it, stdin writes it, the client
/// resizes it.
///
/// Owns the master (through the `SharedFD` the output and stdin also hold). Lives on the
/// agent's loop thread. Closed when the output ends after the leader was reaped, or when the
/// leader is reaped after the output ended, or when the session ends.
final class SessionTerminal {
    let master: SharedFD
    /// The slave side was closed while the leader still runs. Closing a master hangs the
    /// terminal up, and the kernel then sends SIGHUP to the session: a program that closes its
    /// stdio before it exits (GNU cat, anything using close_stdout) would die of that signal
    /// between its last close and its exit. So the master stays open, unwatched, until the
    /// leader is reaped.
    private var heldForLeader = false

    init(master: SharedFD) { self.master = master }

    /// TIOCSWINSZ: the foreground process group gets SIGWINCH.
    func resize(rows: UInt16, columns: UInt16) {
        guard master.isOpen else { return }
        try? Terminal.resize(master.raw, rows: rows, columns: columns)
    }

    /// What to write for "end of input" after `lastByte` (see `Terminal.endOfInput`).
    func endOfInput(lastByte: UInt8?) -> [UInt8] { Terminal.endOfInput(master.raw, lastByte: lastByte) }

    /// The output stopped reading the master (EOF, EIO, or the drain time is over).
    func outputEnded(leaderRunning: Bool) {
        if leaderRunning { heldForLeader = true } else { master.close() }
    }

    func leaderReaped() {
        guard heldForLeader else { return }
        heldForLeader = false
        master.close()
    }

    func close() { master.close() }
}
