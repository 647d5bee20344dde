#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherClient
import TetherProtocol

/// The TetherClient library through a real relay process to a real agent.
@Suite(.serialized) struct LibraryEndToEndTests {
    /// `agentTimeout`: a command longer than the deadline on a live agent runs to its end (the
    /// agent answers the connection's pings); the same wait on a frozen agent throws
    /// `agentUnresponsive`, and the next call works once it thaws.
    @Test(.timeLimit(.minutes(2)))
    func agentTimeoutFailsOnlyWhenTheAgentIsSilent() async throws {
        let live = try LiveRelay("agent-timeout", relayArguments: ["--unresponsive-after", "60s"])
        var options = ClientOptions(socket: .unix(path: live.socketPath))
        options.agentTimeout = .milliseconds(400)
        let client = try await TetherClient.connect(options)
        defer { client.close() }
        let long = try await client.shell("sleep 1.5; echo slept")
        #expect(long.stdoutText == "slept\n" && long.exitCode == 0)

        let waiting = try await client.execStream(["sleep", "600"])
        kill(live.agent.pid, SIGSTOP)
        defer { kill(live.agent.pid, SIGCONT) }
        do {
            _ = try await waiting.wait()
            Issue.record("a session on a frozen agent ended normally")
        } catch {
            #expect(error.code == .remote(.agentUnresponsive), "\(error)")
            #expect(error.message.contains("limit 400ms"), "\(error)")
        }
        kill(live.agent.pid, SIGCONT)
        #expect(try await client.exec(["echo", "back"]).stdoutText == "back\n")
    }

    /// A command its timeout ended is the `timedOut` error carrying the limit, not a result;
    /// the streaming API flags it in the exit status.
    @Test(.timeLimit(.minutes(2)))
    func aTimeoutIsAnErrorCarryingTheLimit() async throws {
        let live = try LiveRelay("timeout")
        let client = try await live.client()
        do {
            _ = try await client.exec(["sh", "-c", "echo begun; sleep 30"], ExecOptions(timeout: .milliseconds(300)))
            Issue.record("the timed-out exec returned a result")
        } catch {
            #expect(error.code == .timedOut, "\(error)")
            #expect(error.context["timeoutMs"] == "300")
            #expect(error.context["stdoutTail"] == "begun\n")
            #expect(error.message.contains("300ms"), "\(error.message)")
        }
        let handle = try await client.execStream(["sleep", "30"], ExecOptions(timeout: .milliseconds(200)))
        let status = try await handle.wait()
        #expect(status.timedOut && status.signal == SIGTERM, "\(status)")
        #expect(try await client.exec(["true"], ExecOptions(timeout: .seconds(30))).status.timedOut == false)
    }

    @Test(.timeLimit(.minutes(2)))
    func execShellAndCollectReturnOutputAndStatus() async throws {
        let live = try LiveRelay()
        let client = try await live.client()
        defer { client.close() }
        #expect(client.serverHello?.role == .relay)
        #expect(client.serverHello?.capabilities.contains("pty/1") == true && client.serverHello?.capabilities.last == "relay/1")

        let output = try await client.exec(["sh", "-c", "printf out; printf err >&2; exit 3"])
        #expect(output.stdoutText == "out")
        #expect(output.stderrText == "err")
        #expect(output.exitCode == 3)
        #expect(!output.success)

        let shell = try await client.shell("echo $((6 * 7)) in $PWD", ExecOptions(cwd: "/tmp"))
        #expect(shell.stdoutText == "42 in /tmp\n")
        #expect(shell.success)

        let handle = try await client.execStream(["sh", "-c", "echo a; echo b >&2; exit 0"])
        #expect(handle.pid > 0)
        let collected = try await handle.collect()
        #expect(collected.stdout == Array("a\n".utf8) && collected.stderr == Array("b\n".utf8))
        #expect(collected.status == ExitStatus(code: 0))

        // Events in order, and a second iteration is refused.
        let events = try await client.execStream(["sh", "-c", "echo one; exit 5"])
        var seen: [ExecEvent] = []
        for try await event in events.events { seen.append(event) }
        #expect(seen.first == .started(pid: events.pid))
        #expect(seen.contains(.stdout(Array("one\n".utf8))))
        #expect(seen.last == .exited(ExitStatus(code: 5)))
        await #expect(throws: TetherError.self) { for try await _ in events.events {} }
    }

    @Test(.timeLimit(.minutes(2)))
    func spawnFailuresAreTypedErrorsWithKindErrnoAndStage() async throws {
        let live = try LiveRelay()
        let client = try await live.client()
        defer { client.close() }
        func failure(_ argv: [String], _ options: ExecOptions = ExecOptions()) async -> TetherError? {
            do {
                _ = try await client.exec(argv, options)
                return nil
            } catch { return error }
        }
        let notFound = await failure(["/no/such/program"])
        #expect(notFound?.code == .spawnFailed)
        #expect(notFound?.spawn?.kind == .notFound)
        #expect(notFound?.spawn?.errno == ENOENT)
        #expect(notFound?.spawn?.stage == .exec)
        #expect(notFound?.context["argv"] == "/no/such/program")
        #expect(notFound?.operation == "exec")
        #expect(notFound?.suggestion != nil)

        let badCwd = await failure(["true"], ExecOptions(cwd: "/no/such/dir"))
        #expect(badCwd?.spawn?.kind == .badCwd)
        #expect(badCwd?.spawn?.errno == ENOENT)

        let user = await failure(["true"], ExecOptions(user: "no-such-user-xyz"))
        #expect(user?.spawn?.kind == .userSetupFailed)
        #expect(user?.spawn?.stage == .user)
        #expect(user?.message.contains("no-such-user-xyz") == true, "\(String(describing: user))")

        // One argument longer than the kernel takes (MAX_ARG_STRLEN, 128 KiB).
        let huge = await failure(["echo", String(repeating: "x", count: 200_000)])
        #expect(huge?.spawn?.kind == .badArgs, "\(String(describing: huge))")
        #expect(huge?.spawn?.errno == E2BIG)

        var limited = ExecOptions()
        // A soft limit above the hard one: setrlimit refuses it in the child (EINVAL).
        limited.rlimits = ["nofile": ResourceLimit(soft: 100, hard: 10)]
        let resource = await failure(["true"], limited)
        #expect(resource?.spawn?.kind == .resourceLimit, "\(String(describing: resource))")

        let json = try #require(notFound?.json)
        #expect(json.contains("\"code\":\"spawnFailed\"") && json.contains("\"timestamp\""), "\(json)")
    }

    @Test(.timeLimit(.minutes(2)))
    func stdinIsTakenOnceAndEOFEndsTheProgram() async throws {
        let live = try LiveRelay()
        let client = try await live.client()
        defer { client.close() }
        let handle = try await client.execStream(["sh", "-c", "wc -c; cat"], ExecOptions(stdin: true))
        let writer = try #require(handle.takeStdin())
        #expect(handle.takeStdin() == nil)
        // Three stdin windows' worth: the writer waits for the agent's acks.
        let chunk = [UInt8](repeating: 0x61, count: 100_000)
        for _ in 0..<8 { try await writer.write(chunk) }
        try writer.close()
        let output = try await handle.collect()
        #expect(output.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines) == "800000")
        #expect(output.success)
    }

    @Test(.timeLimit(.minutes(2)))
    func signalAndKillReachTheProcessGroup() async throws {
        let live = try LiveRelay()
        let client = try await live.client()
        defer { client.close() }
        let trapped = try await client.execStream(["sh", "-c", "trap 'echo usr1; exit 9' USR1; echo ready; while :; do sleep 0.05; done"])
        var iterator = trapped.events.makeAsyncIterator()
        while let event = try await iterator.next() { if event == .stdout(Array("ready\n".utf8)) { break } }
        trapped.signal(SIGUSR1)
        var rest: [ExecEvent] = []
        while let event = try await iterator.next() { rest.append(event) }
        #expect(rest.contains(.stdout(Array("usr1\n".utf8))))
        #expect(rest.last == .exited(ExitStatus(code: 9)))

        // kill() takes the whole group: the leader and the child it started.
        let group = try await client.execStream(["sh", "-c", "sleep 1000 & echo $!; wait"])
        var groupEvents = group.events.makeAsyncIterator()
        var line = ""
        while !line.hasSuffix("\n"), let event = try await groupEvents.next() {
            if case .stdout(let bytes) = event { line += String(decoding: bytes, as: UTF8.self) }
        }
        let sleeper = try #require(Int32(line.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(processIsAlive(sleeper))
        group.kill()
        var last: ExecEvent?
        while let event = try await groupEvents.next() { last = event }
        #expect(last == .exited(ExitStatus(signal: SIGKILL)))
        #expect(eventually { !processIsAlive(sleeper) })

        // The relay-level signal, by session number, from another connection.
        let detached = try await client.execStream(["sleep", "1000"], ExecOptions(detach: true))
        let number = try await detached.detach()
        let other = try await live.client(name: "other")
        defer { other.close() }
        try await other.signal(session: number, SIGTERM)
        let again = try await other.attach(session: number)
        #expect(try await again.wait() == ExitStatus(signal: SIGTERM))
    }

    @Test(.timeLimit(.minutes(5)))
    func aThousandSessionsFromFiftyClientsDeliverEveryByte() async throws {
        let live = try LiveRelay()
        let clients = 50, perClient = 20
        var connections: [TetherClient] = []
        for i in 0..<clients { connections.append(try await live.client(name: "load-\(i)")) }
        defer { for client in connections { client.close() } }
        // Every session is started before any is read, so all 1,000 are open at once; each
        // writes its own sequence to stdout and a tag to stderr after a pause.
        let results = try await withThrowingTaskGroup(of: (Int, Int, ExecOutput).self) { group in
            let gate = Gate(count: clients * perClient)
            for (c, client) in connections.enumerated() {
                for s in 0..<perClient {
                    let n = 200 + c * perClient + s
                    group.addTask {
                        let handle = try await client.execStream(["sh", "-c", "seq 1 \(n); read x; echo tag-\(c)-\(s) >&2"],
                                                                 ExecOptions(stdin: true))
                        let writer = try #require(handle.takeStdin())
                        await gate.arrive()
                        try await writer.write("go\n")
                        try writer.close()
                        return (c, s, try await handle.collect())
                    }
                }
            }
            var all: [(Int, Int, ExecOutput)] = []
            for try await result in group { all.append(result) }
            return all
        }
        #expect(results.count == clients * perClient)
        var total = 0
        var wrong = 0
        for (c, s, output) in results {
            let n = 200 + c * perClient + s
            let expected = (1...n).map { "\($0)\n" }.joined()
            if output.stdoutText != expected || output.stderrText != "tag-\(c)-\(s)\n" || output.exitCode != 0 { wrong += 1 }
            total += output.stdout.count + output.stderr.count
        }
        #expect(wrong == 0)
        let expectedTotal = (0..<clients * perClient).reduce(0) { sum, i in
            let n = 200 + i
            return sum + (1...n).reduce(0) { $0 + String($1).utf8.count + 1 } + "tag-\(i / perClient)-\(i % perClient)\n".utf8.count
        }
        #expect(total == expectedTotal)
        print("1000 sessions / 50 clients: \(total) bytes, all accounted for")
    }

    @Test(.timeLimit(.minutes(5)))
    func aClientThatStopsReading64MiBHoldsOnlyItsOwnSession() async throws {
        let live = try LiveRelay()
        let slow = try await live.client(name: "slow")
        defer { slow.close() }
        let fast = try await live.client(name: "fast")
        defer { fast.close() }
        let size = 64 << 20
        let stalled = try await slow.execStream(["head", "-c", String(size), "/dev/zero"])
        // Nobody reads `stalled`; its window fills and the agent stops reading the pipe.
        for i in 0..<100 {
            let output = try await fast.exec(["echo", "exec-\(i)"])
            #expect(output.stdoutText == "exec-\(i)\n")
        }
        let producer = stalled.pid
        #expect(processIsAlive(producer), "the producer is held by the window, not finished")
        var received = 0
        for try await event in stalled.events {
            if case .stdout(let bytes) = event { received += bytes.count }
        }
        #expect(received == size)
    }

    @Test(.timeLimit(.minutes(2)))
    func detachReattachAndReplay() async throws {
        let live = try LiveRelay(relayArguments: ["--replay-bytes", "4k"])
        let first = try await live.client(name: "first")
        let handle = try await first.execStream(["sh", "-c", "echo before; read x; echo after-$x; exit 4"],
                                                ExecOptions(stdin: true, detach: true))
        var iterator = handle.events.makeAsyncIterator()
        while let event = try await iterator.next() { if event == .stdout(Array("before\n".utf8)) { break } }
        let number = try await handle.detach()
        first.close()

        let second = try await live.client(name: "second")
        defer { second.close() }
        let listed = try await second.listSessions()
        #expect(listed.contains { $0.session == number && $0.detached })
        let attached = try await second.attach(session: number)
        #expect(attached.session == number)
        #expect(attached.droppedBytes == 0)
        let writer = try #require(attached.takeStdin())
        try await writer.write("x\n")
        let output = try await attached.collect()
        #expect(output.stdoutText == "after-x\n")
        #expect(output.exitCode == 4)

        // Finished while nobody watched, with more output than the replay buffer keeps. The
        // output starts only once the detach was taken (the go file), so some of it is dropped.
        let go = live.directory.file("go")
        let big = try await second.execStream(["sh", "-c", "while [ ! -e \(go) ]; do sleep 0.01; done; "
                                               + "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; exit 6"],
                                              ExecOptions(detach: true))
        let bigNumber = try await big.detach()
        #expect(FileManager.default.createFile(atPath: go, contents: nil))
        // What came before the relay took the detach was this handle's, not the replay's.
        var early = 0
        for try await event in big.events { if case .stdout(let bytes) = event { early += bytes.count } }
        #expect(eventually { (try? runBlocking { try await second.listSessions() })?.first { $0.session == bigNumber }?.exited != nil })
        let replayed = try await second.attach(session: bigNumber)
        let rest = try await replayed.collect()
        let total = (0..<2000).reduce(0) { $0 + "line-\($1)\n".utf8.count }
        #expect(replayed.droppedBytes > 0)
        #expect(UInt64(early + rest.stdout.count) + replayed.droppedBytes == UInt64(total), "what was seen, kept and lost add up")
        #expect(rest.stdoutText.hasSuffix("line-1999\n"))
        #expect(rest.exitCode == 6)
    }

    @Test(.timeLimit(.minutes(2)))
    func anAgentKilledMidStreamEndsSessionsWithAgentGone() async throws {
        let live = try LiveRelay()
        var options = ClientOptions(socket: .unix(path: live.socketPath))
        options.retryBudget = .seconds(1)
        let client = try await TetherClient.connect(options)
        defer { client.close() }
        let handle = try await client.execStream(["sh", "-c", "while :; do echo tick; sleep 0.05; done"])
        let group = handle.pid
        var ticks = 0
        var thrown: TetherError?
        do {
            for try await event in handle.events {
                if case .stdout = event { ticks += 1 }
                if ticks == 3 { live.agent.signal(SIGKILL) }
            }
        } catch { thrown = error }
        kill(-group, SIGKILL)
        #expect(thrown?.code == .remote(.agentGone), "\(String(describing: thrown))")
        #expect(thrown?.operation == "exec")
        // New work gets a typed answer within the retry budget instead of hanging: the relay
        // is waiting for its agent to come back (agentNotReady, retried) and then gives up.
        do {
            _ = try await client.exec(["true"])
            Issue.record("an exec without an agent succeeded")
        } catch {
            #expect([.remote(.agentGone), .remote(.agentNotReady), .relayUnreachable, .connectionClosed].contains(error.code), "\(error)")
        }
    }
}

/// Lets `count` tasks through only once all of them arrived.
actor Gate {
    private var waiting: [CheckedContinuation<Void, Never>] = []
    private let count: Int
    init(count: Int) { self.count = count }

    func arrive() async {
        if waiting.count + 1 == count {
            for waiter in waiting { waiter.resume() }
            waiting = []
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }
}

/// Runs async work from a synchronous condition (polling helpers take closures).
func runBlocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let semaphore = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var result: Result<T, Error>?
    Task.detached {
        do { result = .success(try await body()) } catch { result = .failure(error) }
        semaphore.signal()
    }
    semaphore.wait()
    return try result!.get()
}
