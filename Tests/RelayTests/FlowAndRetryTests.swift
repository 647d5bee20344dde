import Foundation
import Testing
import TetherProtocol
import TetherPosix
import TestSupport
@testable import TetherClient
@testable import TetherRelay

@Suite struct OutputFlowTests {
    let window = Int64(FlowControl.initialWindowBytes)

    @Test func attachedTheAgentGetsExactlyWhatTheClientAcks() {
        var flow = OutputFlow()
        flow.receivedFromAgent(Int(window))
        flow.sentToClient(Int(window))
        #expect(flow.agentGrant(attached: true) == 0)
        flow.clientAcked(100)
        #expect(flow.agentGrant(attached: true) == 100)
        #expect(flow.agentGrant(attached: true) == 0)
        // Acks beyond what was sent widen the window (acking ahead), to 512 KiB and no further.
        flow.clientAcked(UInt64(10 * window))
        #expect(flow.clientCredit == OutputFlow.maxWindow)
        #expect(flow.agentGrant(attached: true) == OutputFlow.maxWindow - 100)
    }

    @Test func aClientThatAcksAheadGetsTheWiderWindowEndToEnd() {
        var flow = OutputFlow()
        flow.clientAcked(UInt64(OutputFlow.maxWindow - window))
        // The agent may send the whole widened window before the client acks anything more.
        #expect(flow.agentGrant(attached: true) == OutputFlow.maxWindow - window)
        flow.receivedFromAgent(Int(OutputFlow.maxWindow))
        flow.sentToClient(Int(OutputFlow.maxWindow))
        #expect(flow.clientCredit == 0)
        #expect(flow.agentGrant(attached: true) == 0)
        // From then on the agent gets what the client acks, as with the initial window.
        flow.clientAcked(4096)
        #expect(flow.agentGrant(attached: true) == 4096)
    }

    @Test func heldBytesCountAgainstTheAgentsWindow() {
        var flow = OutputFlow()
        flow.receivedFromAgent(1000)
        flow.pending.append(kind: .stdout, flags: [], payload: [UInt8](repeating: 1, count: 1000))
        // The client has room but the bytes are still queued: no grant yet.
        #expect(flow.agentGrant(attached: true) == 0)
        flow.pending.consumeData(1000)
        flow.sentToClient(1000)
        flow.clientAcked(1000)
        #expect(flow.agentGrant(attached: true) == 1000)
    }

    @Test func unattachedTheRelayAcksInHalfWindowSteps() {
        var flow = OutputFlow()
        flow.receivedFromAgent(Int(window / 2) - 1)
        #expect(flow.agentGrant(attached: false) == 0)
        flow.receivedFromAgent(1)
        #expect(flow.agentGrant(attached: false) == window / 2)
    }

    @Test func trimmingDropsTheOldestDataAndKeepsOtherFrames() {
        var pending = PendingFrames()
        pending.append(kind: .started, flags: [], payload: [0xA0])
        pending.append(kind: .stdout, flags: [], payload: [1, 2, 3, 4])
        pending.append(kind: .stderr, flags: [], payload: [5, 6])
        pending.append(kind: .done, flags: .end, payload: [0xA0])
        #expect(pending.trimData(toAtMost: 3) == 3)
        #expect(pending.dataBytes == 3)
        var kinds: [FrameKind] = []
        var data: [UInt8] = []
        while let first = pending.first {
            kinds.append(first.kind)
            if first.kind.isData {
                data += first.payload[first.offset...]
                pending.consumeData(first.remaining)
            } else {
                pending.removeFirst()
            }
        }
        #expect(kinds == [.started, .stdout, .stderr, .done])
        #expect(data == [4, 5, 6])
    }
}

@Suite struct ClientRetryTests {
    @Test func backoffDoublesUpToTheCapAndFitsTheBudget() {
        var options = ClientOptions(socket: .unix(path: "/x"))
        options.retryInitialDelay = .milliseconds(10)
        options.retryMaxDelay = .milliseconds(80)
        options.retryBudget = .milliseconds(400)
        let delays = Retry(options, operation: "test").delays().map { $0 / 1_000_000 }
        #expect(delays == [10, 20, 40, 80, 80, 80, 80, 10])
        #expect(delays.reduce(0, +) == 400)
    }

    @Test func onlyTransientFailuresAreRetried() async {
        var options = ClientOptions(socket: .unix(path: "/x"))
        options.retryInitialDelay = .milliseconds(1)
        // Far more than the test needs: which errors are retried must not depend on how soon a
        // loaded machine (the whole suite runs in parallel on 2 cores) wakes the task up.
        options.retryBudget = .seconds(600)
        let retry = Retry(options, operation: "test")
        var attempts = 0
        let result: Result<Int, TetherError> = await Result { () async throws(TetherError) -> Int in
            try await retry.run { () async throws(TetherError) -> Int in
                attempts += 1
                if attempts < 3 { throw TetherError(.remote(.agentNotReady), "not yet", operation: "test") }
                throw TetherError(.remote(.agentGone), "gone", operation: "test")
            }
        }
        #expect(attempts == 3)
        guard case .failure(let error) = result else {
            Issue.record("should fail")
            return
        }
        #expect(error.code == .remote(.agentGone))
    }
}

extension Result where Failure == TetherError {
    init(_ body: () async throws(TetherError) -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

@Suite struct HelloDeadlineTests {
    /// A socket that accepts and then says nothing (what a second client of an agent sees:
    /// the agent serves one connection at a time) is a typed timeout, not a hang.
    @Test(.timeLimit(.minutes(1)))
    func aServerThatNeverSaysHelloIsATimeout() async throws {
        let dir = try TemporaryDirectory("hello")
        let path = dir.file("silent.sock")
        let listener = try Socket.listen(.unix(path: path))
        var options = ClientOptions(socket: .unix(path: path))
        options.helloTimeout = .milliseconds(300)
        do {
            _ = try await TetherClient.connect(options)
            Issue.record("connected to a server that never said hello")
        } catch {
            #expect(error.code == .timedOut, "\(error)")
            #expect(error.suggestion?.contains("one connection at a time") == true)
        }
        // Not retried: waiting longer would not make a busy agent answer. Every attempt is a
        // connection queued on the listener (nobody accepted them), so exactly one is there.
        var attempts = 0
        while let connection = try Socket.accept(listener.raw) {
            attempts += 1
            _ = consume connection
        }
        #expect(attempts == 1)
    }
}

@Suite struct TetherErrorTests {
    @Test func encodesEveryFieldAsJSON() throws {
        let failed = Failed(kind: .notFound, errno: 2, stage: .exec, message: "no such file")
        let error = TetherError(.spawnFailed, "program not found", operation: "exec", context: ["argv": "nosuch"],
                                errno: 2, spawn: failed, timestamp: Date(timeIntervalSince1970: 1_700_000_000))
        let object = try JSONSerialization.jsonObject(with: Data(error.json.utf8)) as? [String: Any]
        #expect(object?["code"] as? String == "spawnFailed")
        #expect(object?["operation"] as? String == "exec")
        #expect(object?["errno"] as? Int == 2)
        #expect(object?["timestamp"] as? String == "2023-11-14T22:13:20Z")
        #expect((object?["context"] as? [String: String])?["argv"] == "nosuch")
        let spawn = object?["spawn"] as? [String: Any]
        #expect(spawn?["kind"] as? String == "notFound")
        #expect(spawn?["stage"] as? String == "exec")
        #expect(object?["suggestion"] as? String == "check the program name and PATH inside the sandbox")
        let decoded = try JSONDecoder.iso8601.decode(TetherError.self, from: Data(error.json.utf8))
        #expect(decoded == error)
    }

    @Test func onlyRelayUnreachableAndAgentNotReadyAreTransient() {
        #expect(TetherError(.relayUnreachable, "", operation: "").isTransient)
        #expect(TetherError(.remote(.agentNotReady), "", operation: "").isTransient)
        #expect(!TetherError(.remote(.agentGone), "", operation: "").isTransient)
        #expect(!TetherError(.remote(.agentUnresponsive), "", operation: "").isTransient)
        #expect(!TetherError(.spawnFailed, "", operation: "").isTransient)
    }
}

extension JSONDecoder {
    static var iso8601: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
