#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// What stdin handling asks the session to tell its client.
enum StdinReply {
    /// Bytes written to the program (or dropped), which the client may send again.
    case ack(Int)
    case error(StdinError)
}

/// A session's stdin: the bytes its client sent that the program has not read yet, the acks
/// it owes, and end of input (closing a pipe, or the terminal's VEOF on a pty).
///
/// Holds the pipe's write end (closing it at end of input or on a write error), or the pty
/// master it shares with the output (never closed here: the output owns it). Lives on the
/// agent's loop thread. Ends when its session ends, or earlier when end of input was written.
final class SessionStdin {
    /// Unacked stdin the agent buffers per session: four windows, for clients that count
    /// loosely; beyond it the client broke the protocol.
    static let limitBytes = 4 * FlowControl.initialWindowBytes

    /// The pipe's write end or the pty master; nil for stdin "none".
    private var fd: SharedFD?
    private let terminal: SessionTerminal?
    private var queue = ByteQueue()
    /// Written to the program but not yet acked to the client.
    private var writtenUnacked = 0
    private var endRequested = false
    /// VEOF bytes still to write to the terminal.
    private var pendingEOF: [UInt8]?
    private var lastByte: UInt8?
    private var noneReported = false
    /// Nothing more can be written (end of input written, a write failed, or the output ended).
    private(set) var isClosed = false
    /// The last write hit EAGAIN: waiting for EPOLLOUT.
    private(set) var isBlocked = false

    init(fd: SharedFD?, terminal: SessionTerminal?) {
        self.fd = fd
        self.terminal = terminal
    }

    /// The descriptor to wait on for room, when a write is waiting for it.
    var waitingDescriptor: CInt? { isBlocked && !isClosed ? fd?.raw : nil }

    /// A new client: what the old one sent and was not written is dropped with it.
    func clientChanged() {
        queue.removeAll()
        writtenUnacked = 0
        noneReported = false
    }

    /// The client stopped watching: its unwritten bytes are dropped; an end of input it asked
    /// for still happens.
    func clientLeft(_ replies: inout [StdinReply]) {
        queue.removeAll()
        writtenUnacked = 0
        if endRequested { finishIfDrained(&replies) }
    }

    /// A `stdin` frame: bytes for the program, `end` meaning end of input after them. Returns
    /// false when the client sent beyond the window (a protocol violation).
    func receive(_ bytes: UnsafeRawBufferPointer, end: Bool, _ replies: inout [StdinReply]) -> Bool {
        guard fd != nil, !isClosed else {
            if fd == nil && !isClosed && !noneReported && bytes.count > 0 {
                noneReported = true
                replies.append(.error(StdinError(errno: EBADF, message: "this session's stdin is /dev/null (request stdin: \"pipe\")")))
            }
            if bytes.count > 0 { replies.append(.ack(bytes.count)) }
            return true
        }
        guard queue.count + writtenUnacked + bytes.count <= Self.limitBytes else { return false }
        queue.append(bytes)
        if end { endRequested = true }
        write(&replies)
        return true
    }

    /// Room to write (EPOLLOUT, or a hang-up while blocked: the write then reports it).
    func writable(_ replies: inout [StdinReply]) {
        if pendingEOF != nil && queue.isEmpty {
            finishIfDrained(&replies)
            ack(&replies, all: isClosed)
        } else {
            write(&replies)
        }
    }

    /// The terminal's output ended: nothing can be written to it any more.
    func outputEnded() {
        guard terminal != nil else { return }
        fd = nil
        isClosed = true
        queue.removeAll()
    }

    /// The descriptor cannot be waited for (epoll_ctl failed): stdin ends as on a write error.
    func cannotWait(_ error: Errno, _ replies: inout [StdinReply]) { failed(error, &replies) }

    /// Closes the pipe (the session ends).
    func close() {
        if terminal == nil { fd?.close() }
        fd = nil
    }

    private func write(_ replies: inout [StdinReply]) {
        guard let fd, !isClosed else { return }
        isBlocked = false
        while !queue.isEmpty {
            let result: Result<WriteResult, Errno> = queue.withBytes { raw in
                Result { () throws(Errno) -> WriteResult in try FileIO.write(fd.raw, raw) }
            }
            switch result {
            case .success(.wrote(let n)):
                queue.withBytes { raw in if n > 0 { lastByte = raw[n - 1] } }
                queue.consume(n)
                writtenUnacked += n
            case .success(.wouldBlock):
                isBlocked = true
            case .failure(let error):
                failed(error, &replies)
                return
            }
            if isBlocked { break }
        }
        if queue.isEmpty { finishIfDrained(&replies) }
        ack(&replies, all: isClosed)
    }

    /// After the queue is written: end of input closes the pipe, or writes VEOF to a terminal.
    private func finishIfDrained(_ replies: inout [StdinReply]) {
        guard endRequested, queue.isEmpty, let fd, !isClosed else { return }
        guard let terminal else {
            fd.close()
            self.fd = nil
            isClosed = true
            return
        }
        if pendingEOF == nil { pendingEOF = terminal.endOfInput(lastByte: lastByte) }
        guard var pending = pendingEOF, !pending.isEmpty else { return }
        let result = pending.withUnsafeBytes { raw in Result { () throws(Errno) -> WriteResult in try FileIO.write(fd.raw, raw) } }
        switch result {
        case .success(.wrote(let n)):
            pending.removeFirst(n)
            pendingEOF = pending
            if pending.isEmpty {
                isClosed = true        // the master stays open: it carries the output
                endRequested = false
            } else {
                isBlocked = true
            }
        case .success(.wouldBlock):
            isBlocked = true
        case .failure(let error):
            failed(error, &replies)
        }
    }

    /// Acks what was written once half a window of it is (the client then always has half a
    /// window to send), and with `all` whatever is left (input ended or failed). Not each time
    /// the queue runs dry: behind a program that reads as fast as bytes come, that was an ack
    /// per 64 KiB frame, and each ack wakes the agent's link, the relay and the client. Per GiB
    /// into `wc -c` (tether-bench, four alternating runs): client CPU 0.43-0.47 -> 0.37-0.38 s,
    /// relay 0.33-0.37 -> 0.31-0.33 s; 1047-1172 -> 1175-1220 MB/s.
    private func ack(_ replies: inout [StdinReply], all: Bool = false) {
        guard writtenUnacked > 0 else { return }
        guard all || writtenUnacked >= FlowControl.ackThresholdBytes else { return }
        replies.append(.ack(writtenUnacked))
        writtenUnacked = 0
    }

    /// EPIPE (the program closed its stdin) or EIO (the terminal hung up): reported once, not
    /// terminal for the session; later stdin is acked and dropped.
    private func failed(_ error: Errno, _ replies: inout [StdinReply]) {
        writtenUnacked += queue.count
        queue.removeAll()
        let what = error.rawValue == EPIPE ? "the program closed its stdin" : "writing to the program's stdin failed"
        replies.append(.error(StdinError(errno: error.rawValue, message: "\(what): \(error)")))
        isClosed = true
        isBlocked = false
        if terminal == nil {
            fd?.close()
            fd = nil
        }
        ack(&replies, all: true)
    }
}
