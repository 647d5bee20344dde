#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import Synchronization
import Testing
import TestSupport
import TetherClient
import TetherPosix
import TetherProtocol
@testable import TetherRelay

/// Who the relay lets in: nothing runs before a client's hello, `--max-clients` turns the
/// extra client away with `tooManyClients`, and at its descriptor limit the relay refuses
/// promptly, keeps serving the clients it has, and writes at most a line a second about it.
@Suite(.serialized) struct RelayAdmissionTests {
    init() { signal(SIGPIPE, SIG_IGN) }

    // MARK: hello first

    @Test(.timeLimit(.minutes(1)))
    func requestsBeforeHelloGetHelloRequiredAndReachNoAgent() throws {
        let harness = try RelayHarness()
        let client = try connectRaw(harness.socketPath)
        _ = try client.expect(.hello)

        try client.send(id: 1, flags: .start, ExecRequest(argv: ["/bin/touch", "/before-hello"]))
        let refused = try client.expect(.error, id: 1)
        #expect(refused.flags.contains(.end), "the refusal ends the session id")
        #expect(try refused.decode(ErrorMessage.self).code == .helloRequired)
        try client.send(id: 0, Ping(nonce: 7))
        #expect(try client.expect(.error, id: 0).decode(ErrorMessage.self).code == .helloRequired)
        try client.send(id: 2, flags: .start, ListSessions())
        #expect(try client.expect(.error, id: 2).decode(ErrorMessage.self).code == .helloRequired)
        try client.send(id: 0, Shutdown(graceMs: 0))
        #expect(try client.expect(.error, id: 0).decode(ErrorMessage.self).code == .helloRequired)

        // The same connection works once it said hello, and the first exec and the first
        // shutdown the agent ever sees are the ones sent after it.
        try client.send(id: 0, Hello(role: .client, name: "late", pid: getpid()))
        let exec = try client.exec(ExecRequest(argv: ["/bin/echo", "after hello"]), id: 3, agent: harness.agent)
        #expect(try exec.decode(ExecRequest.self).argv == ["/bin/echo", "after hello"])
        try client.send(id: 0, Shutdown(graceMs: 5))
        #expect(try harness.agent.expect(.shutdown).decode(Shutdown.self).graceMs == 5)
    }

    @Test(.timeLimit(.minutes(2)))
    func anExecBeforeHelloRunsNothingInARealSandboxAgent() throws {
        let relay = try RelayProcess()
        let marker = relay.directory.file("ran")
        let client = try connectRaw(relay.socketPath)
        _ = try client.expect(.hello)
        try client.send(id: 1, flags: .start, ExecRequest(argv: ["/bin/sh", "-c", OSString("echo ran > \(marker)")]))
        let refused = try client.expect(.error, id: 1).decode(ErrorMessage.self)
        #expect(refused.code == .helloRequired)

        // A ping answered after the hello means the relay handled everything sent before it.
        try client.send(id: 0, Hello(role: .client, name: "late", pid: getpid()))
        try client.send(id: 0, Ping(nonce: 1))
        #expect(try client.expect(.pong, id: 0).decode(Pong.self).nonce == 1)
        #expect(!FileManager.default.fileExists(atPath: marker), "the exec sent before hello ran")

        // The same request after hello runs (so the check above could have seen it).
        try client.send(id: 2, flags: .start, ExecRequest(argv: ["/bin/sh", "-c", OSString("echo ran > \(marker)")]))
        #expect(try client.expect(.exited, id: 2).decode(Exited.self) == .code(0))
        #expect(FileManager.default.fileExists(atPath: marker))
    }

    // MARK: --max-clients

    @Test(.timeLimit(.minutes(1)))
    func aClientOverMaxClientsGetsTooManyClientsAndIsClosed() async throws {
        let harness = try RelayHarness { $0.maxClients = 3 }
        let admitted = try (0..<3).map { _ in try harness.client() }

        let extra = try connectRaw(harness.socketPath)
        // The relay refuses at accept and closes: a hello written after that close fails with
        // EPIPE, and the refusal is still there to read.
        _ = try? extra.send(id: 0, Hello(role: .client, name: "extra", pid: getpid()))
        let first = try extra.receive()
        #expect(first.kind == .error && first.id == 0, "the refused client gets an error, not the relay's hello")
        let refusal = try first.decode(ErrorMessage.self)
        #expect(refusal.code == .tooManyClients)
        #expect(refusal.message.contains("3"))
        #expect(extra.waitForClose())

        // The library reports it as such, without retrying, and so does the CLI.
        do {
            let client = try await TetherClient.connect(to: "unix:" + harness.socketPath)
            client.close()
            Issue.record("a fourth client was let in")
        } catch {
            #expect(error.code == .remote(.tooManyClients), "\(error)")
        }
        let cli = try runCommand([Binaries.product("tether").path, "ping", "--socket", "unix:" + harness.socketPath], timeout: 60)
        #expect(cli.status != 0)
        #expect(cli.output.contains("tooManyClients") || cli.output.contains("at most 3 clients"), "\(cli.output)")

        // The admitted clients are served; once one leaves, a new client is let in.
        try admitted[0].send(id: 5, flags: .start, ListSessions())
        #expect(try admitted[0].expect(.sessionList, id: 5).flags.contains(.end))
        admitted[2].close()
        #expect(eventually {
            guard let late = try? connectRaw(harness.socketPath), let frame = try? late.receive() else { return false }
            return frame.kind == .hello
        })
    }

    // MARK: the descriptor limit

    /// The relay runs with RLIMIT_NOFILE 64 (prlimit): 100 connections at once fill it, and a
    /// flood of new connections keeps coming for a few seconds. Every flooding client gets an
    /// answer (`tooManyClients`, errno EMFILE) instead of hanging; a client connected before
    /// stays served throughout; and the relay's stderr has at most one EMFILE line per second
    /// (the relay that spun on EMFILE wrote 170 MB of them in 15 s).
    ///
    /// Then its limit is lowered below its spare descriptor (prlimit --pid), so it cannot even
    /// turn clients away: the listener rests instead of spinning (the relay's CPU time over
    /// that stretch stays far below a core's), the client it has is still served, and the
    /// clients left waiting are answered once the limit is back.
    @Test(.timeLimit(.minutes(3)))
    func atItsDescriptorLimitTheRelayRefusesPromptlyStaysResponsiveAndLogsOnceASecond() async throws {
        let prlimit = try #require(["/usr/bin/prlimit", "/bin/prlimit"].first { FileManager.default.isExecutableFile(atPath: $0) },
                                   "needs prlimit (util-linux)")
        let started = Date()
        let relay = try RelayProcess(descriptorLimit: 64, prlimit: prlimit)
        let good = try await TetherClient.connect(to: "unix:" + relay.socketPath)
        defer { good.close() }
        let raw = try connectRaw(relay.socketPath)
        try raw.send(id: 0, Hello(role: .client, name: "raw", pid: getpid()))
        _ = try raw.expect(.hello)

        // Fill the relay: the first ~50 are admitted (hello), the rest refused at the limit.
        var held: [FramePeer] = []
        var refusedAtOnce = 0
        for _ in 0..<100 {
            let peer = try connectRaw(relay.socketPath)
            let first = try peer.receive(timeout: .seconds(30))
            if first.kind == .hello {
                held.append(peer)
            } else {
                let error = try first.decode(ErrorMessage.self)
                #expect(error.code == .tooManyClients && error.errno == EMFILE, "\(error)")
                refusedAtOnce += 1
            }
        }
        #expect(!held.isEmpty && refusedAtOnce > 0, "admitted \(held.count), refused \(refusedAtOnce): the limit was not reached")

        // A flood of new connections for 3 s while the good clients keep working.
        let flood = Flood(socketPath: relay.socketPath)
        flood.start(seconds: 3)
        var execs = 0
        while flood.isRunning {
            let output = try await good.exec(["/bin/echo", "served \(execs)"])
            #expect(output.stdoutText == "served \(execs)\n")
            try raw.send(id: 0, Ping(nonce: UInt64(execs)))
            #expect(try raw.expect(.pong, id: 0).decode(Pong.self).nonce == UInt64(execs))
            execs += 1
        }
        let outcome = flood.wait()
        #expect(execs > 0)
        #expect(outcome.refused > 0 && outcome.unanswered == 0, "flood: \(outcome)")

        // Now the relay cannot even accept to refuse: no descriptor below 4 is free (the soft
        // limit only: raising a hard limit again can be refused, in containers).
        #expect(try runCommand([prlimit, "--pid", "\(relay.process.pid)", "--nofile=4:64"]).status == 0)
        let cpuBefore = relay.cpuSeconds()
        let restStarted = Date()
        let restWaiters = try (0..<5).map { _ in try connectRaw(relay.socketPath) }
        var restExecs = 0
        while Date().timeIntervalSince(restStarted) < 3 {
            #expect(try await good.exec(["/bin/true"]).success)
            restExecs += 1
            try await Task.sleep(for: .milliseconds(100))
        }
        let cpuUsed = relay.cpuSeconds() - cpuBefore
        let restSeconds = Date().timeIntervalSince(restStarted)
        #expect(restExecs > 0)
        #expect(cpuUsed < restSeconds / 4, "the relay used \(cpuUsed) s of CPU in \(restSeconds) s at the limit: spinning?")

        // The limit back: everyone left waiting hears (refused at the limit, or let in).
        #expect(try runCommand([prlimit, "--pid", "\(relay.process.pid)", "--nofile=64:64"]).status == 0)
        for peer in restWaiters {
            let first = try peer.receive(timeout: .seconds(30))
            #expect(first.kind == .hello || (try? first.decode(ErrorMessage.self).code) == .tooManyClients)
        }

        let elapsed = Date().timeIntervalSince(started)
        let lines = relay.process.stderr.split(separator: "\n")
        let emfileLines = lines.filter { $0.contains("EMFILE") }
        #expect(!emfileLines.isEmpty, "the refusals are reported:\n\(relay.process.stderr)")
        #expect(emfileLines.count <= Int(elapsed.rounded(.up)) + 2,
                "\(emfileLines.count) EMFILE lines in \(elapsed) s:\n\(relay.process.stderr)")
        #expect(lines.count <= Int(elapsed.rounded(.up)) + 6, "\(relay.process.stderr)")
        #expect(relay.process.isRunning)
        withExtendedLifetime(held) {}
    }

    /// 20,000 idle clients, each having said hello, and the relay still serves an exec. The
    /// hard RLIMIT_NOFILE of this test process is 20,000 on the CI machine, and the relay's
    /// too (it inherits it): the connections are held by a small Python program, not by this
    /// process, so the suites running beside this one keep their descriptors. It opens as many
    /// as its hard limit allows up to 20,000, less 100 for what it and the relay need besides
    /// (19,900 here). The relay's cap is raised above that.
    @Test(.timeLimit(.minutes(5)))
    func aRelayHolding20000IdleClientsStillServesAnExec() async throws {
        let python = try #require(["/usr/bin/python3", "/usr/local/bin/python3"].first { FileManager.default.isExecutableFile(atPath: $0) },
                                  "needs python3 to hold the connections")
        let relay = try RelayProcess(extraArguments: ["--max-clients", "25000"])
        var hello = FrameEncoder()
        hello.append(id: 0, Hello(role: .client, name: "idle", pid: getpid()))
        let helloHex = hello.withPendingBytes { $0.map { String(format: "%02x", $0) }.joined() }
        let holder = try ChildProcess([python, "-c", Self.holdConnections, relay.socketPath, "20000", "100", helloHex], stdin: true)
        defer { holder.closeStdin() }
        // The whole line: a read of the pipe may end inside it ("holding 199").
        let count = { () -> Int? in
            let text = holder.stdout
            guard let start = text.range(of: "holding "), let end = text[start.upperBound...].firstIndex(of: "\n") else { return nil }
            return Int(text[start.upperBound..<end])
        }
        #expect(eventually(within: 240) { count() != nil }, "\(holder.stdout)\(holder.stderr)")
        let held = try #require(count())
        // The holder inherits this process's hard limit, and so does the relay.
        var limit = rlimit()
        getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit)
        let expected = min(20_000, Int(clamping: limit.rlim_max) - 100)
        #expect(held == expected, "the holder opened \(held) connections of \(expected):\n\(holder.stdout)")

        // The relay holds every one of them (it refused none), and serves an exec beside them.
        #expect(eventually(within: 120) { relay.openDescriptors() >= held }, "the relay holds \(relay.openDescriptors())")
        let client = try await TetherClient.connect(to: "unix:" + relay.socketPath)
        defer { client.close() }
        let output = try await client.exec(["/bin/echo", "still serving"])
        #expect(output.stdoutText == "still serving\n")

        let stderr = relay.process.stderr
        #expect(!stderr.contains("accept:") && !stderr.contains("over --max-clients"), "the relay refused clients:\n\(stderr)")
        #expect(stderr.split(separator: "\n").count <= 5, "\(stderr)")
        #expect(relay.process.isRunning)
    }

    /// argv: socket path, how many, how many descriptors to leave free, the hello frame in hex.
    /// Prints `holding N` once connected, then holds them until its stdin closes.
    static let holdConnections = """
        import resource, socket, sys
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        path, wanted, spare, hello = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), bytes.fromhex(sys.argv[4])
        wanted = min(wanted, hard - spare)
        held = []
        try:
            while len(held) < wanted:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                s.sendall(hello)
                held.append(s)
        except OSError as error:
            print("stopped after", len(held), "connections:", error, flush=True)
        print("holding", len(held), flush=True)
        sys.stdin.read()
        """
}

// MARK: helpers

/// Connects a raw frame peer, retrying while the relay is not listening yet.
private func connectRaw(_ path: String) throws -> FramePeer {
    for _ in 0..<200 {
        if let peer = try? FramePeer.connect(path) { return peer }
        usleep(10_000)
    }
    return try FramePeer.connect(path)
}

/// A real agent and a `tether relay` process between it and a socket in a temporary
/// directory, optionally under a descriptor limit (prlimit before exec).
final class RelayProcess {
    let directory: TemporaryDirectory
    let agent: ChildProcess
    let process: ChildProcess
    var socketPath: String { directory.file("relay.sock") }

    init(descriptorLimit: Int? = nil, prlimit: String = "/usr/bin/prlimit", extraArguments: [String] = []) throws {
        directory = try TemporaryDirectory("admission")
        agent = try ChildProcess(Binaries.product("tether-agent").path, ["--listen", "unix:" + directory.file("agent.sock")])
        var argv = [Binaries.product("tether").path, "relay", "--agent", "unix:" + directory.file("agent.sock"),
                    "--listen", "unix:" + directory.file("relay.sock"), "--agent-timeout", "20s"] + extraArguments
        if let descriptorLimit { argv = [prlimit, "--nofile=\(descriptorLimit):\(descriptorLimit)", "--"] + argv }
        process = try ChildProcess(argv)
        guard process.waitForOutput("serving clients", onStandardError: true) else {
            throw ClientError("the relay did not start serving:\n\(process.stderr)")
        }
    }

    deinit {
        process.signal(SIGKILL)
        agent.signal(SIGKILL)
    }

    /// Descriptors the relay has open (/proc/PID/fd).
    func openDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.pid)/fd").count) ?? 0
    }

    /// User plus system CPU time of the relay, all threads (/proc/PID/stat fields 14 and 15).
    func cpuSeconds() -> Double {
        (try? ProcessHandle.cpuSeconds(of: process.pid)) ?? 0
    }
}

/// Connections opened as fast as the relay answers them, from a thread of their own: each
/// reads the first frame (or end of stream) and closes.
final class Flood: @unchecked Sendable {
    struct Outcome: Sendable, CustomStringConvertible {
        var refused = 0, admitted = 0, unanswered = 0, connectFailed = 0
        var description: String { "refused \(refused), admitted \(admitted), unanswered \(unanswered), connect failed \(connectFailed)" }
    }
    let socketPath: String
    private let state = Mutex<(running: Bool, outcome: Outcome)>((false, Outcome()))
    private let finished = DispatchSemaphore(value: 0)

    init(socketPath: String) { self.socketPath = socketPath }

    var isRunning: Bool { state.withLock { $0.running } }

    func start(seconds: Double) {
        state.withLock { $0.running = true }
        let path = socketPath
        Thread { [self] in
            let deadline = Date(timeIntervalSinceNow: seconds)
            var outcome = Outcome()
            while Date() < deadline {
                guard let peer = try? FramePeer.connect(path) else {
                    outcome.connectFailed += 1
                    continue
                }
                switch Result(catching: { try peer.receive(timeout: .seconds(30)) }) {
                case .success(let frame) where frame.kind == .error: outcome.refused += 1
                case .success: outcome.admitted += 1
                case .failure: outcome.unanswered += 1
                }
                peer.close()
            }
            state.withLock { $0 = (false, outcome) }
            finished.signal()
        }.start()
    }

    func wait() -> Outcome {
        finished.wait()
        finished.signal()
        return state.withLock { $0.outcome }
    }
}

/// The bookkeeping behind the log line and the listener's rests, with a clock of its own.
@Suite struct ClientAdmissionTests {
    @Test func refusalsAreReportedAtOnceThenAtMostOnceASecondWithCounts() {
        let admission = ClientAdmission()
        let second: UInt64 = 1_000_000_000
        let start: UInt64 = 50 * second
        let emfile = Errno(rawValue: EMFILE)

        admission.count(.descriptorLimit(emfile))
        #expect(admission.reportDue(nowNs: start).now, "the first refusal is reported at once")
        let first = admission.takeReport(nowNs: start, maxClients: 4096, descriptorLimit: 64)
        #expect(first == "refused 1 client at the descriptor limit (accept: \(emfile), RLIMIT_NOFILE 64) (further refusals: one line a second at most)")
        #expect(!admission.hasUnreported)

        // A flood within the next second: counted, not reported until the second is over.
        for _ in 0..<10_000 { admission.count(.descriptorLimit(emfile)) }
        for _ in 0..<3 { admission.count(.overCap) }
        let due = admission.reportDue(nowNs: start + second / 2)
        #expect(!due.now && due.atNs == start + second)
        let next = admission.takeReport(nowNs: start + second, maxClients: 4096, descriptorLimit: 64)
        #expect(next == "in the last 1.0 s: refused 10000 clients at the descriptor limit (accept: \(emfile), RLIMIT_NOFILE 64); refused 3 clients over --max-clients 4096")
        #expect(admission.takeReport(nowNs: start + 3 * second, maxClients: 4096, descriptorLimit: 64) == nil, "nothing new, no line")
    }

    @Test func theListenersRestDoublesUpToASecondAndIsShortAgainAfterAnAccept() {
        let admission = ClientAdmission()
        let rests = (0..<10).map { _ in admission.takeRest() }
        #expect(rests.prefix(4) == [.milliseconds(10), .milliseconds(20), .milliseconds(40), .milliseconds(80)])
        #expect(rests.last == .seconds(1))
        #expect(rests.allSatisfy { $0 <= .seconds(1) })
        admission.acceptWorked()
        #expect(admission.takeRest() == .milliseconds(10))

        admission.count(.listenerRested(Errno(rawValue: ENFILE)))
        admission.count(.listenerRested(Errno(rawValue: ENFILE)))
        let line = admission.takeReport(nowNs: 1, maxClients: 8, descriptorLimit: nil) ?? ""
        #expect(line.hasPrefix("stopped accepting 2 times, the last time for 10 ms (accept: ENFILE"), "\(line)")
    }

    @Test func theSpareDescriptorIsOpenedOnceAndClosed() {
        let admission = ClientAdmission()
        #expect(admission.openSpare())
        let spare = admission.spare
        #expect(spare >= 0 && fcntl(spare, F_GETFD) & FD_CLOEXEC != 0)
        #expect(admission.openSpare() && admission.spare == spare, "a second call keeps the one it has")
        admission.closeSpare()
        #expect(admission.spare == -1)
    }
}
