// libFuzzer target: the relay's frame dispatch, both directions, in process. An input is
// `[u16 BE n][n bytes the agent sends][the rest: bytes a client sends]`. Each input gets a fresh
// `Relay` whose agent is one end of a socketpair (`fd:N`); the harness plays that agent (a valid
// hello, then the input's agent bytes) and one client on the relay's unix socket (a hello, then
// the input's client bytes), all on the relay's own event loop (same thread, no locks), reading
// and discarding what the relay sends. 10 ms after everything was written, or 300 ms after the
// start at the latest, the harness stops the relay. Checked beyond "no trap": `run()` returns,
// the relay's first frame to the client is its hello, and descriptors do not grow across inputs.
#if canImport(Glibc)
import Glibc
#endif
import TetherPosix
import TetherProtocol
@testable import TetherRelay

nonisolated(unsafe) var baselineFDs = -1
nonisolated(unsafe) var inputs = 0
nonisolated(unsafe) var socketDir = ""

func openDescriptors() -> Int {
    guard let dir = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(dir) }
    var count = 0
    while readdir(dir) != nil { count += 1 }
    return count
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    Signals.ignore(SIGPIPE)
    var template = Array("/tmp/fuzz-relay.XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { fatalError("mkdtemp: \(errno)") }
    socketDir = String(cString: made)
    return 0
}

/// One side the harness plays: writes `outbound` as the socket takes it, discards what arrives
/// (keeping the first bytes to check the first frame).
final class FakePeer {
    let fd: CInt
    var outbound: [UInt8]
    var written = 0
    var received: [UInt8] = []
    init(fd: CInt, outbound: [UInt8]) {
        self.fd = fd
        self.outbound = outbound
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }
    var done: Bool { written == outbound.count }
    func pump() {
        while written < outbound.count {
            let n = outbound[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            written += n
        }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            if received.count < 64 { received += buffer[0..<min(n, 64)] }
        }
    }
}

func hello(_ role: PeerRole) -> [UInt8] {
    var encoder = FrameEncoder()
    let message = role == .agent
        ? Hello(role: .agent, name: "fuzz-agent", pid: 1, capabilities: Agentish.capabilities, agentVersion: "0.1.0", bootNs: 1, readyNs: 2)
        : Hello(role: .client, name: "fuzz-client", pid: 2, capabilities: [])
    encoder.append(id: 0, kind: .hello, payload: message.cborBytes)
    return encoder.withPendingBytes { Array($0) }
}

enum Agentish { static let capabilities = ["exec", "pty", "stdin", "signals", "rlimits", "detach", "sessions", "shutdown"] }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeBufferPointer(start: data, count: size)
    guard size >= 2 else { return 0 }
    let agentCount = min(Int(input[0]) << 8 | Int(input[1]), size - 2)
    let agentBytes = Array(input[2..<(2 + agentCount)])
    let clientBytes = Array(input[(2 + agentCount)...])

    var pair: [CInt] = [-1, -1]
    guard socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
        fatalError("socketpair: \(errno)")
    }
    let path = socketDir + "/relay.sock"
    unlink(path)
    var configuration = RelayConfiguration(agent: .fd(pair[0]), listen: .unix(path: path))
    configuration.agentTimeout = .milliseconds(50)
    configuration.diagnostics = { _ in }
    let owner: Relay
    do { owner = try Relay(configuration) } catch { fatalError("Relay: \(error)") }
    // The handlers below live in the relay's loop: they must not keep the relay alive.
    unowned let relay = owner
    unowned let loop = owner.loop

    let agent = FakePeer(fd: pair[1], outbound: hello(.agent) + agentBytes)
    var client: FakePeer?
    var stopScheduled = false
    func maybeStop() {
        guard !stopScheduled, agent.done, client?.done ?? false else { return }
        stopScheduled = true
        _ = loop.schedule(after: .milliseconds(10)) { relay.beginStop() }
    }
    /// Everything written: only what arrives matters now. A refusal from epoll_ctl here is the
    /// loop's failure on a descriptor it watches, which is a finding.
    func watchReadableOnly(_ fd: CInt) {
        do { try loop.modify(fd, events: EventLoop.readable) } catch { fatalError("epoll_ctl MOD on a watched descriptor: \(error)") }
    }
    try! loop.watch(agent.fd, events: EventLoop.readable | EventLoop.writable) { _ in
        agent.pump()
        if agent.done { watchReadableOnly(agent.fd) }
        maybeStop()
    }
    // The relay listens once the agent's hello arrived: connect then.
    func tryConnect() {
        guard client == nil, !relay.stopping else { return }
        guard relay.listener >= 0 else {
            _ = loop.schedule(after: .milliseconds(1)) { tryConnect() }
            return
        }
        guard let fd = try? Socket.connect(.unix(path: path)).release() else { return }
        let peer = FakePeer(fd: fd, outbound: hello(.client) + clientBytes)
        client = peer
        try! loop.watch(fd, events: EventLoop.readable | EventLoop.writable) { _ in
            peer.pump()
            if peer.done { watchReadableOnly(fd) }
            maybeStop()
        }
    }
    loop.soon { tryConnect() }
    _ = loop.schedule(after: .milliseconds(300)) { relay.beginStop() }

    do { try owner.run() } catch {
        // Stopping because the agent went away (the input's agent bytes broke the link) is a
        // documented outcome, not a finding.
    }
    loop.unwatch(agent.fd)
    _ = Glibc.close(agent.fd)
    if let client {
        loop.unwatch(client.fd)
        _ = Glibc.close(client.fd)
        var decoder = FrameDecoder()
        client.received.withUnsafeBytes { decoder.append($0) }
        if let first = try? decoder.next(), first.kind != .hello { fatalError("the relay's first frame is \(first.kind), not hello") }
    }

    inputs += 1
    if inputs % 64 == 0 {
        // The relay's connector thread may still be closing a socket it gave up on: a leak is
        // growth that stays.
        var fds = openDescriptors()
        for _ in 0..<100 where baselineFDs >= 0 && fds > baselineFDs + 8 {
            usleep(10_000)
            fds = openDescriptors()
        }
        if baselineFDs < 0 { baselineFDs = fds } else if fds > baselineFDs + 8 { fatalError("descriptors grow: \(baselineFDs) -> \(fds)") }
    }
    return 0
}
