#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TetherAgent
import TetherClient
import TetherPosix
import TetherProtocol

/// Tether end to end: TetherClient -> `tether relay` -> agent, the path users take, and the
/// client straight to the agent (what the relay costs).
enum TetherMeasurements {
    /// `exec` of /bin/true and its result, `count` times after a warm-up.
    static func execRoundTrip(_ client: TetherClient, count: Int) async throws -> Timings {
        for _ in 0..<min(100, count) { _ = try await client.exec(["/bin/true"]) }
        var timings = Timings(reserving: count)
        for _ in 0..<count {
            let start = Clock.monotonicNs()
            let output = try await client.exec(["/bin/true"])
            timings.add(Clock.monotonicNs() - start)
            guard output.success else { throw BenchError.failed("/bin/true exited \(output.status)") }
        }
        return timings
    }

    /// /bin/true started by the agent's own spawn code run in this process (`DirectSpawn`:
    /// plan, pipes, capability bound, no_new_privs, the profile's filter, vfork child) and
    /// reaped, `count` times after a warm-up, under the default profile and under none: an
    /// exec without the agent's loop, its protocol or any transport, and (beside posix_spawn)
    /// what the confinement costs. With them, the spawning thread's CPU per filtered spawn (its
    /// own work: plan, pipes, clone, reaping; the child's is its own), to set beside the
    /// agent's CPU per exec.
    ///
    /// On a thread of its own whose bounding set is lowered as the agent's is (capabilities
    /// belong to a thread, and its children inherit its set): the children then do the same
    /// work as the agent's, and the rest of the benchmark keeps every capability.
    static func directSpawns(count: Int) throws -> (filtered: Timings, unfiltered: Timings, filteredCPUNs: UInt64) {
        final class Outcome: @unchecked Sendable { var result: Result<(Timings, Timings, UInt64), Error>? }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        DedicatedThread.start(named: "bench-spawn") {
            defer { done.signal() }
            outcome.result = Result {
                try GuestCapabilities.lowerStandaloneBoundingSet()
                let spawner = DirectSpawn()
                func measure(_ seccomp: SeccompProfile) throws -> (Timings, cpuNs: UInt64) {
                    for _ in 0..<min(100, count) { _ = try spawner.run(["/bin/true"], seccomp: seccomp) }
                    var timings = Timings(reserving: count)
                    let cpuBefore = ThreadCPU.callingThread()
                    for _ in 0..<count {
                        let start = Clock.monotonicNs()
                        let status = try spawner.run(["/bin/true"], seccomp: seccomp)
                        timings.add(Clock.monotonicNs() - start)
                        guard status == 0 else { throw BenchError.failed("/bin/true ended with wait status \(status)") }
                    }
                    return (timings, (ThreadCPU.callingThread() - cpuBefore) / UInt64(count))
                }
                let filtered = try measure(.default)
                return (filtered.0, try measure(.unfiltered).0, filtered.cpuNs)
            }
        }
        done.wait()
        return try outcome.result!.get()
    }

    /// `ping` answered by the agent: the transport alone (client, relay when there is one,
    /// agent and back), to tell it apart from the spawn in an exec round trip.
    static func pingRoundTrip(_ client: TetherClient, count: Int) async throws -> Timings {
        for _ in 0..<min(100, count) { _ = try await client.ping() }
        var timings = Timings(reserving: count)
        for _ in 0..<count {
            let start = Clock.monotonicNs()
            _ = try await client.ping()
            timings.add(Clock.monotonicNs() - start)
        }
        return timings
    }

    /// `head -c BYTES /dev/zero` in the sandbox, its stdout counted by the client as it arrives
    /// (acknowledged as it is consumed, so the 256 KiB window is end to end). Elapsed ns from
    /// the request to the exit status; what the client, relay and agent spent is added to `cost`.
    static func stdoutThroughput(_ client: TetherClient, bytes: Int, cost: TransferCost) async throws -> UInt64 {
        let mark = try cost.mark()
        let start = Clock.monotonicNs()
        let handle = try await client.execStream(["head", "-c", String(bytes), "/dev/zero"])
        var received = 0
        var exited: ExitStatus?
        for try await event in handle.events {
            switch event {
            case .stdout(let chunk): received += chunk.count
            case .exited(let status): exited = status
            default: break
            }
        }
        let elapsed = Clock.monotonicNs() - start
        try cost.add(since: mark)
        guard received == bytes else { throw BenchError.shortRead(expected: bytes, got: received) }
        guard exited?.success == true else { throw BenchError.failed("head exited \(String(describing: exited))") }
        return elapsed
    }

    /// `bytes` of pseudo-random data written to a program's stdin in the sandbox: `wc -c`
    /// for the timed run (it only counts, so the figure is the transport's, not a digest's:
    /// `sha256sum` alone tops out near 500 MB/s of one core, which on two cores it shares
    /// with the client, relay and agent), checked against the count it prints; then, untimed,
    /// `verifyBytes` through `sha256sum`, whose digest must equal the local one (no byte lost
    /// or reordered). Elapsed ns of the timed run, from the request to the exit status; what
    /// the client, relay and agent spent in it is added to `cost`.
    static func stdinThroughput(_ client: TetherClient, bytes: Int, verifyBytes: Int = 32 << 20, cost: TransferCost) async throws -> UInt64 {
        let data = pseudoRandomBytes(count: max(bytes, verifyBytes))
        let mark = try cost.mark()
        let start = Clock.monotonicNs()
        let counted = try await feedStdin(client, ["wc", "-c"], data[0..<bytes])
        let elapsed = Clock.monotonicNs() - start
        try cost.add(since: mark)
        guard counted.trimmingCharacters(in: .whitespacesAndNewlines) == String(bytes) else {
            throw BenchError.failed("wc -c in the sandbox counted \(counted) of \(bytes) stdin bytes")
        }
        let expected = try localSHA256(Array(data[0..<verifyBytes]))
        let digest = try await feedStdin(client, ["sha256sum"], data[0..<verifyBytes]).split(separator: " ").first.map(String.init) ?? ""
        guard digest == expected else {
            throw BenchError.failed("sha256 in the sandbox \(digest) != local \(expected): stdin bytes were lost or reordered")
        }
        return elapsed
    }

    /// Runs `argv` with `data` on its stdin (written in 256 KiB chunks); returns its stdout.
    private static func feedStdin(_ client: TetherClient, _ argv: [String], _ data: ArraySlice<UInt8>, chunk: Int = 256 << 10) async throws -> String {
        var options = ExecOptions()
        options.stdin = true
        let handle = try await client.execStream(argv, options)
        guard let stdin = handle.takeStdin() else { throw BenchError.failed("no stdin sink") }
        let collector = Task { try await handle.collect() }
        var offset = data.startIndex
        while offset < data.endIndex {
            let end = min(offset + chunk, data.endIndex)
            try await stdin.write(Array(data[offset..<end]))
            offset = end
        }
        try stdin.close()
        let output = try await collector.value
        guard output.success else { throw BenchError.failed("\(argv.joined(separator: " ")) exited \(output.status)") }
        return output.stdoutText
    }

    /// `clients` connections, each running `perClient` sessions at once that print a known text
    /// (`seq 1 LINES`); every byte is compared. Returns the wall time and the bytes missing or
    /// wrong across all sessions.
    static func concurrentSessions(socket: String, clients: Int, perClient: Int, lines: Int = 2000) async throws -> (ns: UInt64, lost: Int, total: Int) {
        let expected = Array((1...lines).map { "\($0)\n" }.joined().utf8)
        let start = Clock.monotonicNs()
        let lost = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<clients {
                group.addTask {
                    let client = try await TetherClient.connect(to: socket, name: "tether-bench")
                    defer { client.close() }
                    return try await withThrowingTaskGroup(of: Int.self) { sessions in
                        for _ in 0..<perClient {
                            sessions.addTask {
                                let output = try await client.exec(["seq", "1", String(lines)])
                                return output.stdout == expected && output.success ? 0 : max(expected.count - output.stdout.count, 1)
                            }
                        }
                        return try await sessions.reduce(0, +)
                    }
                }
            }
            return try await group.reduce(0, +)
        }
        return (Clock.monotonicNs() - start, lost, clients * perClient * expected.count)
    }

    /// xorshift64*: fast, deterministic, and no repeating block a reordering could hide behind.
    static func pseudoRandomBytes(count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        bytes.withUnsafeMutableBytes { raw in
            let words = raw.count / 8
            let wordPointer = raw.baseAddress!.assumingMemoryBound(to: UInt64.self)
            for i in 0..<words {
                state ^= state >> 12; state ^= state << 25; state ^= state >> 27
                wordPointer[i] = state &* 0x2545_F491_4F6C_DD1D
            }
            for i in (words * 8)..<raw.count { raw[i] = UInt8(truncatingIfNeeded: i) }
        }
        return bytes
    }

    /// The digest from this machine's own sha256sum (coreutils), computed before the timing.
    static func localSHA256(_ data: [UInt8]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        let input = Foundation.Pipe()
        let output = Foundation.Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        DedicatedThread.start(named: "bench-stdin") {
            data.withUnsafeBytes { input.fileHandleForWriting.write(Data($0)) }
            try? input.fileHandleForWriting.close()
        }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return text.split(separator: " ").first.map(String.init) ?? ""
    }
}
