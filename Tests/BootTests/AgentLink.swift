#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// A small blocking protocol client for the boot tests: connects to a sandbox's agent socket,
/// exchanges hellos, runs one command at a time and collects its output. Written from the
/// wire protocol (docs/PROTOCOL.md) so the boot tests depend on it, not on the client
/// library's internals.
///
/// Owns one connected socket (closed on deinit). Used from one test thread.
final class AgentLink {
    let fd: OwnedFD
    private var decoder = FrameDecoder()
    private var nextSession: UInt32 = 1
    private(set) var hello: Hello?

    struct Result {
        var stdout = ""
        var stderr = ""
        var exited: Exited?
        var failed: Failed?
    }

    enum LinkError: Error, CustomStringConvertible {
        case closed
        case timedOut
        case unexpected(String)
        var description: String {
            switch self {
            case .closed: "the agent closed the connection"
            case .timedOut: "no frame from the agent in time"
            case .unexpected(let what): what
            }
        }
    }

    init(socketPath: String) throws {
        fd = try Socket.connect(.unix(path: socketPath))
        try send(id: 0, Hello(role: .client, name: "boot-tests", pid: getpid()))
        let first = try nextFrame(timeoutMs: 30_000)
        guard first.kind == .hello else { throw LinkError.unexpected("first frame was \(first.kind)") }
        hello = try first.decode(Hello.self)
    }

    func send<M: Message>(id: UInt32, flags: FrameFlags = [], _ message: M) throws {
        var encoder = FrameEncoder()
        encoder.append(id: id, flags: flags, message)
        try FileIO.writeAll(fd.raw, encoder.withPendingBytes { Array($0) })
    }

    /// Runs argv to completion; acknowledges output so long outputs keep flowing.
    func exec(_ argv: [String], user: String? = nil, timeoutMs: Int32 = 60_000) throws -> Result {
        let id = nextSession
        nextSession += 1
        try send(id: id, flags: .start, ExecRequest(argv: argv.map { OSString($0) }, user: user))
        var result = Result()
        var unacked = 0
        while true {
            let frame = try nextFrame(timeoutMs: timeoutMs)
            guard frame.id == id else { continue }
            switch frame.kind {
            case .stdout, .stderr:
                let text = String(decoding: frame.payload, as: UTF8.self)
                if frame.kind == .stdout { result.stdout += text } else { result.stderr += text }
                unacked += frame.payload.count
                if unacked >= FlowControl.ackThresholdBytes {
                    try send(id: id, Ack(bytes: UInt64(unacked)))
                    unacked = 0
                }
            case .exited:
                result.exited = try frame.decode(Exited.self)
            case .failed:
                result.failed = try frame.decode(Failed.self)
                return result
            case .done:
                return result
            case .error:
                throw LinkError.unexpected("error on session \(id): \(try frame.decode(ErrorMessage.self).message)")
            default:
                continue
            }
        }
    }

    /// Reads until one whole frame is decoded.
    func nextFrame(timeoutMs: Int32) throws -> Frame {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            if let frame = try decoder.next() { return frame }
            var pfd = pollfd(fd: fd.raw, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, timeoutMs)
            if ready < 0 && errno == EINTR { continue }
            if ready == 0 { throw LinkError.timedOut }
            let n = read(fd.raw, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { throw LinkError.closed }
            decoder.append(buffer[0..<n])
        }
    }
}
