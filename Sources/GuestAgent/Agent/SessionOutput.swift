#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// The descriptors a session reads its program's output from: the stdout and stderr pipes, or
/// the one pty master (see `SessionTerminal`).
///
/// Owns the pipes' read ends; the master is the terminal's. Lives on the agent's loop thread.
/// Each stream ends at EOF (or EIO on a pty master: the slave side is gone), or when the
/// session stops waiting for it (the drain time after the leader's exit, or the session's end).
final class SessionOutput {
    struct Stream {
        let kind: FrameKind
        let fd: SharedFD
        var isOpen = true
    }

    private(set) var streams: [Stream]
    let terminal: SessionTerminal?

    init(stdout: SharedFD, stderr: SharedFD?, terminal: SessionTerminal?) {
        var streams = [Stream(kind: .stdout, fd: stdout)]
        if let stderr { streams.append(Stream(kind: .stderr, fd: stderr)) }
        self.streams = streams
        self.terminal = terminal
    }

    var allClosed: Bool { !streams.contains { $0.isOpen } }
    var anyOpen: Bool { !allClosed }

    /// The stream reading from `fd`, if it is still open.
    func index(of fd: CInt) -> Int? { streams.firstIndex { $0.fd.raw == fd && $0.isOpen } }

    /// One read(2). EOF and errors both end the stream for the caller (EIO on a pty master
    /// means its slave side is gone); EAGAIN is `.wouldBlock`.
    func read(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) -> ReadResult {
        guard streams[index].isOpen else { return .endOfFile }
        do { return try FileIO.read(streams[index].fd.raw, into: buffer) } catch { return .endOfFile }
    }

    /// Bytes the stream holds right now (FIONREAD); unknown counts as one pipe's worth.
    func readableBytes(_ index: Int) -> Int {
        let count = Int(csys_readable_bytes(streams[index].fd.raw))
        return count < 0 ? 1 << 20 : count
    }

    /// Stops reading a stream: a pipe is closed, a pty master is handed to the terminal.
    func close(_ index: Int, leaderRunning: Bool) {
        guard streams[index].isOpen else { return }
        streams[index].isOpen = false
        if let terminal {
            terminal.outputEnded(leaderRunning: leaderRunning)
        } else {
            streams[index].fd.close()
        }
    }

    func closeAll(leaderRunning: Bool) {
        for i in streams.indices { close(i, leaderRunning: leaderRunning) }
    }
}
