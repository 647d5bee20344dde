// libFuzzer target: the agent's frame dispatch, in process. Each input is the byte stream a
// host sends after its hello; a fresh `Agent` serves one end of a socketpair (`--listen fd:N`
// given a connected stream), exactly as a VM's agent serves its vsock connection.
//
// The harness sits on the agent's own event loop (same thread, no locks): it reads and discards
// whatever the agent sends, and 10 ms after the input was written it shuts its writing half,
// which the agent takes as "the host went away": SIGTERM to every session, reap, return from
// `run()`. So sessions the input starts (seeds exec /bin/true) are reaped before the next input;
// a leader that survives its grace gets SIGKILL. Checked beyond "no trap": the agent's hello is
// the first frame, `run()` returns (no hang), and no descriptor or child outlives an input.
#if canImport(Glibc)
import Glibc
#endif
import CSys
import TetherPosix
import TetherProtocol
@testable import TetherAgent

nonisolated(unsafe) var signalFD: CInt = -1
nonisolated(unsafe) var baselineFDs = -1
nonisolated(unsafe) var inputs = 0

func openDescriptors() -> Int {
    guard let dir = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(dir) }
    var count = 0
    while readdir(dir) != nil { count += 1 }
    return count
}

/// What each open descriptor is (fd -> readlink target), for a growth report.
func describeDescriptors() -> String {
    var parts: [String] = []
    for fd in 0..<1024 where fcntl(CInt(fd), F_GETFD) >= 0 {
        var target = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/self/fd/\(fd)", &target, 255)
        parts.append("\(fd)=\(n > 0 ? String(cString: target) : "?")")
    }
    return parts.joined(separator: " ")
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    // As in AgentMain: block the handled signals before any thread exists, read them from a signalfd.
    Signals.ignore(SIGPIPE)
    do {
        try Signals.block(Agent.handledSignals)
        signalFD = try Signals.openSignalFD(Agent.handledSignals).release()
    } catch {
        fatalError("cannot set up the signalfd: \(error)")
    }
    // Orphans the inputs leave (a backgrounded grandchild) come back to the agent, which kills them.
    _ = csys_set_child_subreaper()
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var pair: [CInt] = [-1, -1]
    guard socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
        fatalError("socketpair: \(errno)")
    }
    let host = pair[1]
    var options = AgentOptions()
    options.endpoint = .listen(.fd(pair[0]))
    options.hostname = "fuzz"
    let agent: Agent
    do {
        agent = try Agent(options: options, role: .subreaper, signalFD: signalFD, bootNs: 0, baseLimits: [])
    } catch {
        fatalError("Agent: \(error)")
    }

    // The host's side: hello, then the input, written as the socket takes it.
    var outbound = FrameEncoder()
    outbound.append(id: 0, kind: .hello, payload: Hello(role: .client, name: "fuzz", pid: getpid(), capabilities: []).cborBytes)
    var bytes = outbound.withPendingBytes { Array($0) }
    bytes += UnsafeBufferPointer(start: data, count: size)
    var written = 0
    var received: [UInt8] = []
    var closed = false
    _ = fcntl(host, F_SETFL, fcntl(host, F_GETFL) | O_NONBLOCK)
    func pump() {
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Glibc.write(host, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            written += n
        }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(host, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            if received.count < 64 { received += buffer[0..<min(n, 64)] }
        }
    }
    try! agent.loop.watch(host, events: EventLoop.readable | EventLoop.writable) { _ in
        pump()
        if written == bytes.count && !closed {
            closed = true
            try? agent.loop.modify(host, events: EventLoop.readable)
            _ = agent.loop.schedule(after: .milliseconds(10)) { _ = Glibc.shutdown(host, CInt(SHUT_WR)) }
        }
    }
    do { try agent.run() } catch { fatalError("agent.run: \(error)") }
    agent.loop.unwatch(host)
    _ = Glibc.close(host)

    // The agent's first frame is its hello.
    var decoder = FrameDecoder()
    received.withUnsafeBytes { decoder.append($0) }
    if let first = try? decoder.next(), first.kind != .hello { fatalError("the agent's first frame is \(first.kind), not hello") }

    // Nothing outlives an input (checked every 64 inputs: /proc is not free).
    inputs += 1
    if inputs % 64 == 0 {
        // `run()` returns once the sessions are done; orphans it SIGKILLed on the way out may not
        // have been reaped yet (its loop has ended), so reap here and give them a moment.
        var left = Agent.childrenOfSelf()
        for _ in 0..<200 where !left.isEmpty {
            var status: CInt = 0
            while waitpid(-1, &status, WNOHANG) > 0 {}
            usleep(10_000)
            left = Agent.childrenOfSelf()
        }
        if !left.isEmpty { fatalError("children outlived their input by 2 s: \(left)") }
        let fds = openDescriptors()
        if baselineFDs < 0 { baselineFDs = fds } else if fds > baselineFDs + 8 {
            fatalError("descriptors grow: \(baselineFDs) -> \(fds): \(describeDescriptors())")
        }
    }
    return 0
}
