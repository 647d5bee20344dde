import TetherPosix
import TetherProtocol

/// One `processLogs` request: where in the process's log the reader is, and how much more it
/// accepts (the output window of section 8: the client acks what it consumed).
///
/// Holds no descriptor; the subsystem that owns it writes for it on the link. Lives on the
/// agent's loop thread. Ends (`done`) at the log's end without `follow`, once the process is
/// settled and everything was sent with it, or when the client sends `kill{}`.
final class ProcessLogReader {
    let process: ManagedProcess
    let id: UInt32
    let follow: Bool
    /// The offset of the next byte to send.
    var position: UInt64
    var window = FlowControl.initialWindowBytes

    init(process: ManagedProcess, id: UInt32, position: UInt64, follow: Bool) {
        self.process = process
        self.id = id
        self.position = position
        self.follow = follow
    }

    func grant(bytes: UInt64) {
        window = Int(min(UInt64(Session.maxWindowBytes), UInt64(window) + min(bytes, UInt64(Session.maxWindowBytes))))
    }

    /// Nothing more will come: the reader is at the end of a log that will not grow.
    var isComplete: Bool { position >= process.log.end && (!follow || process.isSettled) }
}

extension AgentProcesses {
    func startLogs(_ request: ProcessLogs, id: UInt32) throws(RequestError) {
        let process = try named(request.name)
        let log = process.log
        let wanted: UInt64
        if let from = request.from {
            wanted = min(from, log.end)
        } else if let tail = request.tail {
            wanted = log.end - min(tail, log.end)
        } else {
            wanted = log.start
        }
        let position = max(wanted, log.start)
        link?.send(ProcessLogPosition(offset: position, droppedBytes: position - wanted), id: id)
        let reader = ProcessLogReader(process: process, id: id, position: position, follow: request.follow)
        requests[id] = .logs(reader)
        pump(reader)
    }

    func pumpAllReaders() {
        for request in requests.values {
            if case .logs(let reader) = request { pump(reader) }
        }
    }

    /// Sends what the window and the link allow, a new position when the ring overtook the
    /// reader, and `done` once the reader is complete.
    func pump(_ reader: ProcessLogReader) {
        guard let link, requests[reader.id] != nil else { return }
        let log = reader.process.log
        var wrote = false
        while reader.window > 0 && !link.congested {
            if reader.position < log.start {
                // The process wrote faster than this reader read: what the ring dropped is skipped, and said so.
                link.send(ProcessLogPosition(offset: log.start, droppedBytes: log.start - reader.position), id: reader.id)
                reader.position = log.start
            }
            guard reader.position < log.end else { break }
            let limit = min(reader.window, Frame.maxDataPayloadBytes)
            let sent = log.withRun(at: reader.position, limit: limit) { kind, bytes in
                link.appendData(id: reader.id, kind: kind, bytes)
                return bytes.count
            }
            reader.position += UInt64(sent)
            reader.window -= sent
            wrote = true
        }
        if wrote { link.queued() }
        if reader.isComplete { finish(reader.id) }
    }
}
