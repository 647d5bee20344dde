#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherClient
import TetherProtocol

/// Many short sessions through one relay and one agent: memory, descriptors and children must
/// come back to where they were. TETHER_SOAK_SESSIONS shortens it (CI); the full run is 10,000.
@Suite(.serialized) struct SoakTests {
    static let fullRun = 10_000

    struct Sample: CustomStringConvertible {
        var agentRSS, relayRSS, agentFDs, relayFDs, agentChildren: Int
        init(_ pair: AgentAndRelay) {
            agentRSS = ProcFacts.rssKiB(pair.agent.pid)
            relayRSS = ProcFacts.rssKiB(pair.relay.pid)
            agentFDs = ProcFacts.descriptorCount(pair.agent.pid)
            relayFDs = ProcFacts.descriptorCount(pair.relay.pid)
            agentChildren = childProcesses(of: pair.agent.pid).count
        }
        var description: String {
            "agent RSS \(agentRSS) KiB, \(agentFDs) fds; relay RSS \(relayRSS) KiB, \(relayFDs) fds; agent children \(agentChildren)"
        }
    }

    @Test(.timeLimit(.minutes(15)))
    func tenThousandSessionsLeaveMemoryDescriptorsAndChildrenFlat() async throws {
        let requested = ProcessInfo.processInfo.environment["TETHER_SOAK_SESSIONS"].flatMap { Int($0) }
        let total = requested ?? Self.fullRun
        if total < Self.fullRun {
            print("note: soak shortened to \(total) sessions by TETHER_SOAK_SESSIONS (the full run is \(Self.fullRun))")
        }
        let pair = try AgentAndRelay("rel-soak")
        let client = try await pair.client()
        defer { client.close() }
        let workers = 4
        var done = 0
        var wrong = 0

        /// (sessions run, sessions whose output or status was not what the program does)
        @Sendable func run(_ count: Int) async throws -> (Int, Int) {
            try await withThrowingTaskGroup(of: (Int, Int).self) { group in
                for worker in 0..<workers {
                    group.addTask {
                        var ran = 0
                        var bad = 0
                        for i in stride(from: worker, to: count, by: workers) {
                            let output = try await client.exec(["/bin/echo", "\(i)"])
                            if output.stdoutText != "\(i)\n" || !output.success { bad += 1 }
                            ran += 1
                        }
                        return (ran, bad)
                    }
                }
                var totals = (0, 0)
                for try await (ran, bad) in group { totals.0 += ran; totals.1 += bad }
                return totals
            }
        }
        // Warm-up (a tenth, at least 200): allocators and caches reach their working size.
        let warmup = max(200, total / 10)
        var (ran, bad) = try await run(warmup)
        done += ran
        wrong += bad
        #expect(eventually(within: 10) { childProcesses(of: pair.agent.pid).isEmpty })
        let warm = Sample(pair)
        let start = ContinuousClock.now
        (ran, bad) = try await run(total - warmup)
        done += ran
        wrong += bad
        let elapsed = seconds(ContinuousClock.now - start)
        #expect(eventually(within: 10) { childProcesses(of: pair.agent.pid).isEmpty }, "children or zombies left behind")
        let end = Sample(pair)
        print("soak: \(total) sessions (\(done) done, \(wrong) wrong), "
              + String(format: "%.0f sessions/s after warm-up", Double(total - warmup) / elapsed))
        print("soak: after warm-up: \(warm)")
        print("soak: at the end:    \(end)")

        #expect(wrong == 0)
        #expect(done == total)
        #expect(ProcFacts.zombies(of: pair.agent.pid) == 0)
        #expect(end.agentFDs <= warm.agentFDs, "agent descriptors grew")
        #expect(end.relayFDs <= warm.relayFDs, "relay descriptors grew")
        // Flat: within 2 MiB or 10% of the warmed-up size, whichever is larger.
        #expect(end.agentRSS <= warm.agentRSS + max(2048, warm.agentRSS / 10), "agent RSS grew")
        #expect(end.relayRSS <= warm.relayRSS + max(2048, warm.relayRSS / 10), "relay RSS grew")
    }
}
