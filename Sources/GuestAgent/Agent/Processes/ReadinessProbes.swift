#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// The checks the agent makes itself, with no tool in the image: listening ports, files, and
/// one HTTP request (`HTTPCheck`). Each is cheap enough to repeat every few milliseconds.
enum ReadinessProbes {
    /// Whether some TCP socket listens on `port`, on any local address, IPv4 or IPv6.
    ///
    /// Asked of the kernel's socket tables, not by connecting: a connection is seen by the
    /// program (a server that takes one client, like `nc -l`, would take the probe as its client
    /// and exit; others log it), the tables are not. First through sock_diag(7) restricted to
    /// LISTEN (`csys_tcp_port_listening`: the kernel walks only its listening hash, microseconds),
    /// else from /proc/net/tcp and tcp6 (which walk every bucket of the established hash:
    /// milliseconds on a host with much memory). Either reads the agent's network namespace,
    /// which the process shares.
    static func isListening(port: UInt16) -> Bool {
        let asked = csys_tcp_port_listening(port)
        if asked >= 0 { return asked == 1 }
        return tableListens("/proc/net/tcp", port: port) || tableListens("/proc/net/tcp6", port: port)
    }

    /// The /proc fallback, also what tests compare the netlink answer with.
    static func isListeningInProcTables(port: UInt16) -> Bool {
        tableListens("/proc/net/tcp", port: port) || tableListens("/proc/net/tcp6", port: port)
    }

    /// One table: lines of `sl local_address rem_address st ...`, the local address as
    /// `HEXADDR:HEXPORT`, the state 0A for TCP_LISTEN.
    private static func tableListens(_ path: String, port: UInt16) -> Bool {
        guard let text = try? PrivateFiles.read(path, limit: 16 << 20, anyOwner: true) else { return false }
        let wanted = hex4(port)
        for line in text.split(separator: 0x0A).dropFirst() {
            let fields = line.split(separator: 0x20, maxSplits: 4)
            guard fields.count >= 4, fields[3].elementsEqual("0A".utf8) else { continue }
            let local = fields[1]
            guard let colon = local.lastIndex(of: 0x3A) else { continue }
            if local[(colon + 1)...].elementsEqual(wanted) { return true }
        }
        return false
    }

    /// The port as the kernel prints it there: four upper-case hex digits.
    private static func hex4(_ port: UInt16) -> [UInt8] {
        let digits = Array("0123456789ABCDEF".utf8)
        return [12, 8, 4, 0].map { digits[Int((port >> UInt16($0)) & 0xF)] }
    }

    /// Where an HTTP probe connects: `localhost` is 127.0.0.1, anything else must be a bare
    /// numeric IPv4 or IPv6 address (names are not resolved, brackets are not taken); nil
    /// otherwise, which refuses the request.
    static func address(of probe: HTTPProbe) -> IPAddress? {
        if probe.host == "localhost" { return .loopback4 }
        return probe.host.hasPrefix("[") ? nil : IPAddress(parsing: probe.host)
    }

    /// Whether `path` exists (stat(2) follows symbolic links; a dangling one does not count).
    static func exists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }
}

/// One HTTP/1.0 `GET` over a nonblocking socket on the agent's loop: connect, send the request,
/// read the status line. Ready on a status 200-399; anything else (refused, reset, a 404, no
/// answer within `attemptTimeout`) is "not yet".
///
/// Owns its socket until `finish`, which reports once and closes it. Lives on the loop thread.
final class HTTPCheck {
    static let attemptTimeout = Duration.seconds(1)
    private let loop: EventLoop
    private let probe: HTTPProbe
    private var fd: CInt = -1
    private var request: [UInt8]
    private var sent = 0
    private var response: [UInt8] = []
    private var timer: TimerID?
    private var onResult: ((Bool) -> Void)?

    init(loop: EventLoop, probe: HTTPProbe) {
        self.loop = loop
        self.probe = probe
        let host = probe.host.contains(":") ? "[\(probe.host)]" : probe.host
        let path = probe.path.hasPrefix("/") ? probe.path : "/" + probe.path
        request = Array("GET \(path) HTTP/1.0\r\nHost: \(host):\(probe.port)\r\nUser-Agent: tether-agent\r\nConnection: close\r\n\r\n".utf8)
    }

    /// Starts one attempt; `onResult` runs once, later (never from inside this call).
    func start(_ onResult: @escaping (Bool) -> Void) {
        self.onResult = onResult
        sent = 0
        response = []
        guard openAndConnect() else {
            loop.soon { [weak self] in self?.finish(false) }
            return
        }
        timer = loop.schedule(after: Self.attemptTimeout) { [weak self] in
            self?.timer = nil
            self?.finish(false)
        }
    }

    /// An attempt still open when its watch goes (the agent stopped): the loop must not keep a
    /// handler for an object that is gone, nor the process a socket nobody reads.
    deinit {
        if fd >= 0 {
            if loop.isWatching(fd) { loop.unwatch(fd, "the HTTP readiness probe") }
            _ = close(fd)
        }
        if let timer { loop.cancel(timer) }
    }

    /// Abandons the attempt without reporting.
    func cancel() {
        onResult = nil
        finish(false)
    }

    private func openAndConnect() -> Bool {
        // The address was checked when the request arrived.
        guard let address = ReadinessProbes.address(of: probe),
              let connecting = try? InternetSocket.connect(address, port: probe.port) else { return false }
        fd = connecting.release().fd
        do {
            try loop.watch(fd, events: EventLoop.writable) { [unowned self] events in ready(events) }
        } catch { return false }
        return true
    }

    private func ready(_ events: UInt32) {
        if sent < request.count {
            guard NonBlockingConnect.result(of: fd) == nil else { return finish(false) }
            let n = request.withUnsafeBytes { raw in send(fd, raw.baseAddress! + sent, raw.count - sent, CInt(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { return }
                return finish(false)
            }
            sent += n
            if sent == request.count { try? loop.modify(fd, events: EventLoop.readable) }
            return
        }
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        if n < 0 {
            if errno == EAGAIN || errno == EINTR { return }
            return finish(false)
        }
        response.append(contentsOf: buffer[0..<n])
        if let status = Self.status(response) { return finish((200...399).contains(status)) }
        if n == 0 || response.count > 4096 { finish(false) }
    }

    /// The status code of a complete status line (`HTTP/1.x NNN ...\r\n`), nil until it is complete.
    static func status(_ response: [UInt8]) -> Int? {
        guard let end = response.firstIndex(of: 0x0A) else { return nil }
        let words = response[..<end].split(separator: 0x20)
        guard words.count >= 2, words[0].starts(with: "HTTP/".utf8), words[1].count == 3 else { return 0 }
        return Int(String(decoding: words[1], as: UTF8.self)) ?? 0
    }

    private func finish(_ ready: Bool) {
        if let timer { loop.cancel(timer) }
        timer = nil
        if fd >= 0 {
            if loop.isWatching(fd) { loop.unwatch(fd, "the HTTP readiness probe") }
            _ = close(fd)
            fd = -1
        }
        let report = onResult
        onResult = nil
        report?(ready)
    }
}
