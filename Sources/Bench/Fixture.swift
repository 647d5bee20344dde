#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import TetherPosix

/// The processes a Tether measurement runs against, as users run them: the stripped static
/// agent (what a VM image embeds) listening on a unix socket, and a `tether relay` process in
/// front of it; and a second agent nobody else uses, for clients that talk to an agent
/// directly (an agent serves one connection at a time, and the relay holds the first's).
/// All are killed when the fixture goes away.
final class Fixture {
    let directory: String
    let agent: Process
    let relay: Process
    let directAgent: Process
    let agentBinary: String
    var directAgentSocket: String { "unix:" + directory + "/direct.sock" }
    var relaySocket: String { "unix:" + directory + "/relay.sock" }

    init(binaries: Binaries) throws {
        var template = Array("/tmp/tether-bench-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw BenchError.failed("mkdtemp: \(Errno.current)")
        }
        directory = String(cString: made)
        Self.directories.append(directory)
        agentBinary = binaries.agent
        agent = try Self.start(binaries.agent, ["--listen", "unix:\(directory)/agent.sock", "--tunnel", "unix:\(directory)/tunnel.sock"],
                               log: directory + "/agent.log")
        try Self.waitFor(socket: directory + "/agent.sock", process: agent, what: "the agent")
        // No exec.log: the figures are for exec and streaming, not for the log writer's disk.
        relay = try Self.start(binaries.tether, ["relay", "--agent", "unix:\(directory)/agent.sock",
                                                 "--listen", "unix:\(directory)/relay.sock", "--no-log",
                                                 "--tunnel", "unix:\(directory)/tunnel.sock"],
                               log: directory + "/relay.log")
        try Self.waitFor(socket: directory + "/relay.sock", process: relay, what: "the relay")
        directAgent = try Self.start(binaries.agent, ["--listen", "unix:\(directory)/direct.sock"], log: directory + "/direct.log")
        try Self.waitFor(socket: directory + "/direct.sock", process: directAgent, what: "the second agent")
    }

    deinit {
        for process in [relay, agent, directAgent] where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Every process and directory a fixture made, for `killAll()`.
    nonisolated(unsafe) private static var started: [Process] = []
    nonisolated(unsafe) private static var directories: [String] = []

    /// Kills what any fixture started and removes its directory: a measurement that fails
    /// ends the benchmark with exit(1), which runs no deinit, and the agents and the relay
    /// would outlive it.
    static func killAll() {
        for process in started where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for directory in directories { try? FileManager.default.removeItem(atPath: directory) }
    }

    private static func start(_ executable: String, _ arguments: [String], log: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        started.append(process)
        return process
    }

    private static func waitFor(socket path: String, process: Process, what: String) throws {
        for _ in 0..<1000 {
            if FileManager.default.fileExists(atPath: path) { return }
            guard process.isRunning else { throw BenchError.failed("\(what) exited before listening (see its log)") }
            usleep(10_000)
        }
        throw BenchError.failed("\(what) did not listen on \(path) within 10 s")
    }
}

/// Where the programs under test are.
struct Binaries {
    /// The static agent: $TETHER_AGENT_STATIC, else what scripts/build-agent.sh of the source
    /// tree this benchmark was built from prints (it builds the agent when it is missing or
    /// stale); only without that tree, the tether-agent next to this benchmark (not stripped,
    /// not static: the report says so).
    let agent: String
    let agentIsStatic: Bool
    /// The `tether` CLI next to this benchmark (for `tether relay`).
    let tether: String

    static func locate() throws -> Binaries {
        let here = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let fm = FileManager.default
        let tether = here + "/tether"
        guard fm.isExecutableFile(atPath: tether) else {
            throw BenchError.missing("\(tether): build every product first (swift build -c release)")
        }
        if let agent = ProcessInfo.processInfo.environment["TETHER_AGENT_STATIC"], fm.isExecutableFile(atPath: agent) {
            return Binaries(agent: agent, agentIsStatic: true, tether: tether)
        }
        if let script = SourceTree.file("scripts/build-agent.sh") {
            FileHandle.standardError.write(Data("tether-bench: \(script) (builds the static agent if needed)\n".utf8))
            return Binaries(agent: try SourceTree.run(script, []), agentIsStatic: true, tether: tether)
        }
        guard fm.isExecutableFile(atPath: here + "/tether-agent") else {
            throw BenchError.missing("no agent: set TETHER_AGENT_STATIC or run from a build of the source tree")
        }
        return Binaries(agent: here + "/tether-agent", agentIsStatic: false, tether: tether)
    }
}

/// The source tree this benchmark was built from: the first directory above the executable
/// (.build/release/tether-bench) that has the file asked for, so the benchmark runs from any
/// working directory.
enum SourceTree {
    static func file(_ relative: String) -> String? {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        while directory.path != "/" {
            let candidate = directory.appendingPathComponent(relative).path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory.deleteLastPathComponent()
        }
        return nil
    }

    /// Runs a script of the tree (stderr passes through) and returns the last line it printed.
    static func run(_ script: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: script)
        process.arguments = arguments
        let output = Foundation.Pipe()
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0, let last = text.split(separator: "\n").last.map(String.init) else {
            throw BenchError.failed("\(script) failed (status \(process.terminationStatus))")
        }
        return last
    }
}

/// A process's resident set, now and at its peak (`VmRSS`, `VmHWM` of /proc/PID/status), in KiB.
struct ResidentSet {
    let currentKiB: Int
    let peakKiB: Int

    init(pid: pid_t) throws {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else {
            throw BenchError.failed("cannot read /proc/\(pid)/status")
        }
        func field(_ name: String) -> Int {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
        }
        currentKiB = field("VmRSS")
        peakKiB = field("VmHWM")
    }
}

/// CPU time one process's main thread has run, in ns: the first field of /proc/PID/schedstat
/// (the scheduler's own count, not /proc/PID/stat's 10 ms ticks, so a few hundred execs
/// are enough to divide it by). The agent and the relay do all their work on that thread;
/// an exec's vfork child is a task of its own and is not counted.
struct ThreadCPU {
    let nanoseconds: UInt64

    init(pid: pid_t) throws {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/schedstat", encoding: .utf8),
              let first = text.split(separator: " ").first, let ns = UInt64(first) else {
            throw BenchError.failed("cannot read /proc/\(pid)/schedstat")
        }
        nanoseconds = ns
    }

    /// The calling thread's CPU time so far.
    static func callingThread() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}

/// What the client (this process), the relay and the agent spend inside the measured transfers
/// only (a ceiling that alternates with them runs in this process too and must not count): CPU
/// time, and context switches, each one a sleep and a wake-up (on this VM the wake-ups, not
/// the copies, are most of a streaming process's kernel time).
final class TransferCost: Sendable {
    struct Usage {
        var seconds = 0.0
        var switches = 0

        static func - (a: Usage, b: Usage) -> Usage { Usage(seconds: a.seconds - b.seconds, switches: a.switches - b.switches) }
        static func += (a: inout Usage, b: Usage) { a = Usage(seconds: a.seconds + b.seconds, switches: a.switches + b.switches) }
    }
    typealias Mark = (client: Usage, relay: Usage, agent: Usage)

    let relay: pid_t
    let agent: pid_t
    private let totals = Mutex<Mark>((Usage(), Usage(), Usage()))

    /// The fixture's relay and the agent behind it.
    init(_ fixture: Fixture) {
        relay = fixture.relay.processIdentifier
        agent = fixture.agent.processIdentifier
    }

    /// The three processes' counts now: call before a measured transfer, `add(since:)` after
    /// it. Fine-grained (/proc's process times move in 10 ms ticks): getrusage for this
    /// process, every thread of it; for the relay and the agent the scheduler's counts of their
    /// main thread, where they do their work.
    func mark() throws -> Mark {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let client = Usage(seconds: Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
                               + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6,
                           switches: usage.ru_nvcsw + usage.ru_nivcsw)
        return (client, try Self.mainThread(of: relay), try Self.mainThread(of: agent))
    }

    func add(since mark: Mark) throws {
        let now = try self.mark()
        totals.withLock {
            $0.client += now.client - mark.client
            $0.relay += now.relay - mark.relay
            $0.agent += now.agent - mark.agent
        }
    }

    /// Each process's CPU seconds and context switches per GiB of `bytes` moved.
    func perGiB(of bytes: Int) -> Mark {
        let gib = Double(bytes) / Double(1 << 30)
        func scaled(_ usage: Usage) -> Usage { Usage(seconds: usage.seconds / gib, switches: Int((Double(usage.switches) / gib).rounded())) }
        let totals = totals.withLock { $0 }
        return (scaled(totals.client), scaled(totals.relay), scaled(totals.agent))
    }

    /// "client X s, relay Y s, agent Z s" and "client N, relay N, agent N" for `perGiB`'s result;
    /// `client` names what this process did.
    static func describe(_ mark: Mark, client: String = "client") -> (cpu: String, switches: String) {
        let parts = [(client, mark.client), ("relay", mark.relay), ("agent", mark.agent)]
        return (parts.map { "\($0.0) \(formatted($0.1.seconds, decimals: 2)) s" }.joined(separator: ", "),
                parts.map { "\($0.0) \($0.1.switches)" }.joined(separator: ", "))
    }

    /// CPU from /proc/PID/schedstat, switches from /proc/PID/status (both the main thread's).
    private static func mainThread(of pid: pid_t) throws -> Usage {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else {
            throw BenchError.failed("cannot read /proc/\(pid)/status")
        }
        let switches = status.split(separator: "\n").filter { $0.contains("ctxt_switches:") }
            .compactMap { Int($0.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "") }.reduce(0, +)
        return Usage(seconds: Double(try ThreadCPU(pid: pid).nanoseconds) / 1e9, switches: switches)
    }
}

func mebibytes(kib: Int) -> String { formatted(Double(kib) / 1024, decimals: 1) + " MiB" }
func megabytes(bytes: Int) -> String { formatted(Double(bytes) / 1e6, decimals: 2) + " MB (\(bytes) bytes)" }
