import TetherPosix

/// An `OwnedFD` that more than one holder can reach: a pty master is both a session's output
/// and its stdin, and whichever side ends first must not close it under the other. Closed
/// exactly once, by `close()` or when the last holder lets go.
///
/// Lives on the agent's loop thread, like the sessions that hold it.
final class SharedFD {
    /// The descriptor number; stays readable after `close()` for logs, never for I/O.
    let raw: CInt
    private var owned: OwnedFD?
    /// Runs just before the close, while the number cannot have been reused: the holder that
    /// watches the descriptor unwatches it here (epoll must not keep a handler for a number
    /// the next open(2) may return).
    var willClose: ((CInt) -> Void)?

    init(_ fd: consuming OwnedFD) {
        raw = fd.raw
        owned = consume fd
    }

    var isOpen: Bool { owned != nil }

    func close() {
        guard owned != nil else { return }
        willClose?(raw)
        willClose = nil
        owned = nil
    }
}
