#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// Pseudo-terminal pairs for `tty` sessions: the master stays with the agent (nonblocking,
/// CLOEXEC), the slave becomes the child's controlling terminal and fds 0-2; the agent
/// closes its copy of the slave right after fork.
enum PtyPair {
    /// Opens a pair with the window size already set, so the program's first TIOCGWINSZ
    /// sees it; the caller owns both descriptors. C: posix_openpt(3), unlockpt(3),
    /// ioctl(2) TIOCGPTPEER, TIOCSWINSZ
    static func open(rows: UInt16, columns: UInt16) throws(SpawnFailure) -> (master: CInt, slave: CInt) {
        var masterFD: CInt = -1
        var slaveFD: CInt = -1
        var stage: CInt = 0
        let result = csys_openpty(rows, columns, &masterFD, &slaveFD, &stage)
        guard result == 0 else {
            let name = SpawnStage(pty: stage)
            throw SpawnFailure(stage: name, errno: -result,
                               message: "cannot set up the pseudo-terminal (\(name)): \(Errno(rawValue: -result))")
        }
        return (masterFD, slaveFD)
    }
}

/// Terminal operations on a pty master.
enum Terminal {
    /// C: ioctl(2) TIOCSWINSZ (the foreground process group gets SIGWINCH).
    static func resize(_ fd: CInt, rows: UInt16, columns: UInt16) throws(Errno) {
        _ = try negativeErrno(csys_set_winsize(fd, rows, columns))
    }

    /// What to write to a pty master for "end of input": the terminal's VEOF character
    /// (tcgetattr(3)), twice in canonical mode when the last byte written did not end a line
    /// (the first VEOF only hands the partial line to the reader, as typing ctrl-D does).
    /// In raw mode the program reads the byte and decides for itself.
    static func endOfInput(_ fd: CInt, lastByte: UInt8?) -> [UInt8] {
        var veof: UInt8 = 4
        var canonical: CInt = 1
        if csys_terminal_eof(fd, &veof, &canonical) != 0 {
            veof = 4
            canonical = 1
        }
        if veof == 0 { veof = 4 }   // _POSIX_VDISABLE: no EOF character; ctrl-D is the convention
        let atLineStart = lastByte == nil || lastByte == UInt8(ascii: "\n") || lastByte == UInt8(ascii: "\r") || lastByte == veof
        return canonical != 0 && !atLineStart ? [veof, veof] : [veof]
    }
}
