#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherClient
import TetherProtocol

/// Named background processes (`client.processes`, `tether start`, `tether proc`) through a
/// real relay process to a real agent on this host. The sandboxed run of the same is in
/// BootTests/ProcessSandboxTests.
@Suite(.serialized, .timeLimit(.minutes(3))) struct ProcessEndToEndTests {
    /// A TCP port nobody listens on now (bound to port 0 and closed again).
    static func unusedPort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw ClientError("cannot find an unused port") }
        return UInt16(bigEndian: address.sin_port)
    }

    /// One HTTP/1.0 GET from this host: the status line, or nil when nothing answers.
    static func httpStatusLine(port: UInt16, path: String = "/") -> String? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { return nil }
        let request = Array("GET \(path) HTTP/1.0\r\n\r\n".utf8)
        guard write(fd, request, request.count) == request.count else { return nil }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        return String(decoding: response, as: UTF8.self).split(separator: "\r\n").first.map(String.init)
    }

    /// Everything the log holds from `offset` now (no follow), as chunks.
    static func readLog(_ process: BackgroundProcess, from offset: UInt64? = nil) async throws -> [ProcessLogChunk] {
        var chunks: [ProcessLogChunk] = []
        for try await chunk in try await process.logs(from: offset) { chunks.append(chunk) }
        return chunks
    }

    @Test func httpdStartedWithWaitPortAnswersAtOnce() async throws {
        let live = try LiveRelay("proc-httpd")
        let client = try await live.client()
        defer { client.close() }
        let port = try Self.unusedPort()
        let root = try live.directory.write("index.html", "hello from httpd\n")
        let web = try await client.processes.start(
            "web", ["busybox", "httpd", "-f", "-p", "127.0.0.1:\(port)", "-h", (root as NSString).deletingLastPathComponent],
            ExecOptions(), ProcessOptions(ready: Readiness(ports: [port]), waitTimeout: .seconds(10)))
        let info = try await web.waitUntilReady()
        // No retry, no sleep: the listener is there when start returns.
        #expect(Self.httpStatusLine(port: port, path: "/index.html") == "HTTP/1.1 200 OK")
        #expect(info.state == .ready && info.readyNs != nil && info.pid > 0, "\(info)")
        // The same through --wait-http, and a second name for the same command is fine.
        let port2 = try Self.unusedPort()
        let checked = try await client.processes.start(
            "web2", ["busybox", "httpd", "-f", "-p", "127.0.0.1:\(port2)", "-h", (root as NSString).deletingLastPathComponent],
            ExecOptions(), ProcessOptions(ready: Readiness(http: [HTTPProbe(port: port2, path: "/index.html")])))
        #expect(try await checked.waitUntilReady().state == .ready)
        #expect(Self.httpStatusLine(port: port2, path: "/index.html") == "HTTP/1.1 200 OK")
        // A name in use is refused, whatever the command.
        do {
            try await client.processes.start("web", ["true"]).waitUntilReady()
            Issue.record("a second 'web' started")
        } catch {
            #expect(error.code == .remote(.processNameInUse), "\(error)")
        }
        try await web.signal(SIGKILL)
        try await checked.signal(SIGKILL)
        #expect(try await web.wait().state == .killed)
    }

    @Test func aCommandThatExitsBeforeListeningIsExitedBeforeReadyWithItsTail() async throws {
        let live = try LiveRelay("proc-exit")
        let client = try await live.client()
        defer { client.close() }
        let port = try Self.unusedPort()
        let bad = try await client.processes.start(
            "bad", ["sh", "-c", "echo starting; echo 'config error: no such table' >&2; exit 3"], ExecOptions(),
            ProcessOptions(ready: Readiness(ports: [port]), waitTimeout: .seconds(20)))
        do {
            try await bad.waitUntilReady()
            Issue.record("a process that exited was ready")
        } catch {
            #expect(error.code == .remote(.processExitedBeforeReady), "\(error)")
            #expect(error.context["exitCode"] == "3", "\(error)")
            #expect(error.context["outputTail"] == "starting\nconfig error: no such table\n", "\(error)")
            #expect(error.context["condition"] == "port \(port)")
        }
        let info = try await client.processes.get("bad")
        #expect(info.state == .failed && info.exited?.code == 3)
    }

    @Test func waitPortNobodyOpensTimesOutAfterTheWaitTimeout() async throws {
        let live = try LiveRelay("proc-timeout")
        let client = try await live.client()
        defer { client.close() }
        let port = try Self.unusedPort()
        let started = Date()
        let sleeper = try await client.processes.start(
            "sleeper", ["sh", "-c", "echo waiting for nothing; sleep 60"], ExecOptions(),
            ProcessOptions(ready: Readiness(ports: [port]), waitTimeout: .seconds(2)))
        do {
            try await sleeper.waitUntilReady()
            Issue.record("ready without a listener")
        } catch {
            #expect(error.code == .remote(.processReadyTimeout), "\(error)")
            #expect(error.context["condition"] == "port \(port)")
            let elapsed = try #require(error.context["elapsedMs"].flatMap { UInt64($0) })
            #expect(elapsed >= 2000, "gave up after \(elapsed) ms")
            #expect(error.context["outputTail"] == "waiting for nothing\n")
        }
        #expect(Date().timeIntervalSince(started) >= 2)
        // Giving up waiting does not end the process.
        #expect(try await sleeper.info().state == .running)
        try await sleeper.signal(SIGTERM)
        #expect(try await sleeper.wait().exited?.signal == SIGTERM)
    }

    @Test func waitLogMatchesALineWrittenInTwoWrites() async throws {
        let live = try LiveRelay("proc-log")
        let client = try await live.client()
        defer { client.close() }
        let flag = live.directory.file("second-half")
        // The line's halves are two writes, the second only after the test saw the first.
        let script = "printf 'server rea'; while [ ! -e \(flag) ]; do sleep 0.01; done; printf 'dy on 8080\\n'; sleep 60"
        let server = try await client.processes.start(
            "split", ["sh", "-c", script], ExecOptions(),
            ProcessOptions(ready: Readiness(logs: ["^server ready on [0-9]+$"]), waitTimeout: .seconds(20)))
        var first: [UInt8] = []
        while first.isEmpty { first = try await Self.readLog(server).flatMap(\.bytes) }
        #expect(first == Array("server rea".utf8))
        #expect(try await server.info().state == .starting, "half a line is not a line")
        _ = try live.directory.write("second-half", "")
        let info = try await server.waitUntilReady()
        #expect(info.state == .ready)
        #expect(try await Self.readLog(server).flatMap(\.bytes) == Array("server ready on 8080\n".utf8))
        try await server.signal(SIGKILL)
    }

    /// The process writes a line each time the test asks (through a FIFO), alternating stdout
    /// and stderr; after each the test reads from the offset where its last read ended.
    @Test func alternatingReadsAndAppendsResumeWithoutGapsOrDuplicates() async throws {
        let live = try LiveRelay("proc-resume")
        let client = try await live.client()
        defer { client.close() }
        let fifo = live.directory.file("requests")
        #expect(mkfifo(fifo, 0o600) == 0)
        let script = "exec 3<>\(fifo); while read -r n <&3; do if [ $((n % 2)) = 0 ]; then echo \"append $n\"; else echo \"append $n\" >&2; fi; done"
        let writer = try await client.processes.start("writer", ["sh", "-c", script])
        try await writer.waitUntilReady()
        let requests = open(fifo, O_WRONLY)
        #expect(requests >= 0)
        defer { close(requests) }
        var next: UInt64 = 0
        var collected: [UInt8] = []
        var duplicated = 0
        var lost = 0
        for n in 0..<1000 {
            let line = Array("\(n)\n".utf8)
            #expect(write(requests, line, line.count) == line.count)
            let expected = Array("append \(n)\n".utf8)
            var got: [UInt8] = []
            while got.count < expected.count {
                for chunk in try await Self.readLog(writer, from: next) {
                    if chunk.offset < next { duplicated += Int(next - chunk.offset) }
                    if chunk.offset > next { lost += Int(chunk.offset - next) }
                    #expect(chunk.stream == (n % 2 == 0 ? .stdout : .stderr), "line \(n) on \(chunk.stream)")
                    got += chunk.bytes
                    next = chunk.nextOffset
                }
            }
            #expect(got == expected, "read \(String(decoding: got, as: UTF8.self)) for line \(n)")
            collected += got
        }
        #expect(duplicated == 0 && lost == 0)
        // The whole log, read once, is what the 1,000 reads put together.
        #expect(try await Self.readLog(writer).flatMap(\.bytes) == collected)
        #expect(try await writer.info().logEnd == UInt64(collected.count))
        try await writer.signal(SIGKILL)
    }

    @Test func processesAndLogsSurviveTheRelayBeingKilledAndRestarted() async throws {
        let live = try LiveRelay("proc-relay")
        var client = try await live.client()
        let script = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.02; done"
        let ticker = try await client.processes.start("ticker", ["sh", "-c", script], ExecOptions(),
                                                      ProcessOptions(ready: Readiness(logs: ["^tick 3$"])))
        let before = try await ticker.waitUntilReady()
        let seen = try await Self.readLog(ticker).flatMap(\.bytes)
        client.close()

        live.relay.signal(SIGKILL)
        _ = live.relay.wait(timeout: 10)
        live.relay = try ChildProcess(Binaries.product("tether").path, [
            "relay", "--agent", "unix:" + live.directory.file("agent.sock"), "--listen", live.socket,
            "--log-dir", live.directory.path, "--agent-timeout", "5s"])
        #expect(live.relay.waitForOutput("serving clients", onStandardError: true))

        client = try await live.client()
        defer { client.close() }
        let again = client.processes.handle("ticker")
        var after = try await again.info()
        #expect(after.pid == before.pid && after.state == .ready && after.startedNs == before.startedNs, "\(after)")
        // It goes on writing with the new relay (wait for a tick or two, at most 10 s).
        for _ in 0..<500 where after.logEnd <= UInt64(seen.count) + 16 {
            try await Task.sleep(nanoseconds: 20_000_000)
            after = try await again.info()
        }
        #expect(after.logEnd > UInt64(seen.count) + 16, "\(after)")
        // The log from the start still begins with what was read before the restart, and
        // reading on from there gives the rest with nothing missing.
        let whole = try await Self.readLog(again).flatMap(\.bytes)
        #expect(Array(whole.prefix(seen.count)) == seen)
        let rest = try await Self.readLog(again, from: UInt64(seen.count)).flatMap(\.bytes)
        #expect(Array(whole.dropFirst(seen.count)) == Array(rest.prefix(whole.count - seen.count)))
        let lines = String(decoding: whole, as: UTF8.self).split(separator: "\n")
        #expect(lines.enumerated().allSatisfy { $0.element == "tick \($0.offset)" }, "a tick is missing or repeated")
        try await again.signal(SIGKILL)
    }

    /// A follower gets every line as it is written and ends when the process has ended and
    /// everything was sent; a reader of a full ring starts at the oldest byte held and is told
    /// how much it missed.
    @Test func followingEndsWithTheProcessAndDroppedOutputIsCounted() async throws {
        let live = try LiveRelay("proc-follow")
        let client = try await live.client()
        defer { client.close() }
        let counter = try await client.processes.start("counter", ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; sleep 0.05; done"])
        try await counter.waitUntilReady()
        var followed: [UInt8] = []
        var next: UInt64 = 0
        for try await chunk in try await counter.logs(follow: true) {
            #expect(chunk.offset == next && chunk.droppedBefore == 0)
            followed += chunk.bytes
            next = chunk.nextOffset
        }
        #expect(String(decoding: followed, as: UTF8.self) == "line 1\nline 2\nline 3\nline 4\nline 5\n")
        #expect(try await counter.info().state == .exited)

        // 64 KiB through a 4 KiB log: the reader from 0 starts where the ring begins.
        let flood = try await client.processes.start("flood", ["sh", "-c", "head -c 65536 /dev/zero | tr '\\0' x"], ExecOptions(),
                                                     ProcessOptions(logBytes: 4096))
        _ = try await flood.wait()
        let chunks = try await Self.readLog(flood, from: 0)
        let first = try #require(chunks.first)
        #expect(first.offset == 65536 - 4096 && first.droppedBefore == 65536 - 4096, "\(first.offset) \(first.droppedBefore)")
        #expect(chunks.flatMap(\.bytes) == Array(repeating: UInt8(ascii: "x"), count: 4096))
        let info = try await flood.info()
        #expect(info.logStart == 61440 && info.logEnd == 65536 && info.droppedBytes == 61440)
    }

    @Test func restartOnFailureRestartsTwiceThenStaysFailed() async throws {
        let live = try LiveRelay("proc-restart")
        let client = try await live.client()
        defer { client.close() }
        let flaky = try await client.processes.start("flaky", ["sh", "-c", "echo run; exit 5"], ExecOptions(),
                                                     ProcessOptions(maxRestarts: 2))
        try await flaky.waitUntilReady()
        let ended = try await flaky.wait()
        #expect(ended.state == .failed && ended.restarts == 2 && ended.exited?.code == 5, "\(ended)")
        #expect(try await Self.readLog(flaky).flatMap(\.bytes) == Array("run\nrun\nrun\n".utf8))
        #expect(try await client.processes.get("flaky").restarts == 2)
    }

    @Test func waitFileAndWaitExecHoldTogether() async throws {
        let live = try LiveRelay("proc-file")
        let client = try await live.client()
        defer { client.close() }
        let pidFile = live.directory.file("daemon.pid")
        let marker = live.directory.file("marker")
        let daemon = try await client.processes.start(
            "daemon", ["sh", "-c", "sleep 0.2; echo $$ > \(pidFile); sleep 0.2; touch \(marker); sleep 60"], ExecOptions(),
            ProcessOptions(ready: Readiness(files: [pidFile], execs: [["test", "-e", marker]])))
        let info = try await daemon.waitUntilReady()
        #expect(FileManager.default.fileExists(atPath: pidFile) && FileManager.default.fileExists(atPath: marker))
        #expect(info.state == .ready)
        try await daemon.signal(SIGKILL)
    }

    /// `tether start` and `tether proc ls|logs|kill|wait|rm` as a script uses them.
    @Test func theCLIStartsListsReadsKillsWaitsAndRemoves() throws {
        let live = try LiveRelay("proc-cli")
        // The agent reads stdout and stderr as each is readable: the pause puts "up" in the log first.
        let start = try live.cli(["start", "--name", "svc", "--wait-log", "warn", "--", "sh", "-c", "echo up; sleep 0.2; echo warn >&2; sleep 60"])
        #expect(start.status == 0 && start.stdout == "svc\n", "\(start)")
        let ls = try live.cli(["proc", "ls"])
        #expect(ls.stdout.split(separator: "\n").first?.hasPrefix("NAME ") == true, "\(ls)")
        let row = ls.stdout.split(separator: "\n").dropFirst().first.map { $0.split(separator: " ", omittingEmptySubsequences: true) }
        #expect(row?.first == "svc" && row?.dropFirst(3).first == "ready", "\(ls)")
        let logs = try live.cli(["proc", "logs", "svc", "--print-offset"])
        #expect(logs.stdout == "up\n" && logs.stderr == "warn\nnext offset 8\n", "\(logs)")
        let from = try live.cli(["proc", "logs", "svc", "--from", "3"])
        #expect(from.stdout.isEmpty && from.stderr == "warn\n", "\(from)")
        let inUse = try live.cli(["start", "--name", "svc", "--", "true"])
        #expect(inUse.status == 1 && inUse.stderr.contains("processNameInUse") || inUse.stderr.contains("exists"), "\(inUse)")
        let running = try live.cli(["proc", "rm", "svc"])
        #expect(running.status == 1 && running.stderr.contains("stop it first"), "\(running)")
        #expect(try live.cli(["proc", "kill", "svc", "-s", "TERM"]).status == 0)
        let wait = try live.cli(["proc", "wait", "svc"])
        #expect(wait.status == 128 + SIGTERM && wait.stdout == "svc killed (signal 15)\n", "\(wait)")
        #expect(try live.cli(["proc", "rm", "svc"]).status == 0)
        let gone = try live.cli(["proc", "logs", "svc"])
        #expect(gone.status == 1 && gone.stderr.contains("no process named 'svc'"), "\(gone)")
        let timeout = try live.cli(["start", "--name", "slow", "--wait-file", "/nonexistent/x", "--wait-timeout", "300ms", "--", "sh", "-c", "echo still booting; sleep 60"])
        #expect(timeout.status == 124 && timeout.stderr.contains("  | still booting"), "\(timeout)")
        let missing = try live.cli(["start", "--name", "ghost", "--", "no-such-program-xyz"])
        #expect(missing.status == 127, "\(missing)")
        #expect(try live.cli(["start", "--name", "ghost", "--", "true"]).status == 0, "a program that never started leaves its name free")
        #expect(try live.cli(["start", "--name", "bad name", "--", "true"]).status == 2)
        _ = try live.cli(["proc", "kill", "slow", "-s", "KILL"])
    }
}
