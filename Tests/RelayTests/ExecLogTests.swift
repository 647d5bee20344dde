#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import Testing
import TestSupport
import TetherProtocol
@testable import TetherRelay

@Suite struct LogLineTests {
    func line(_ event: LogEvent, session: UInt32 = 3, encoder: inout LogLineEncoder) -> [String: Any] {
        var out: [UInt8] = []
        encoder.encode(timeNs: 1_700_000_000_123_456_789, session: session, event: event, into: &out)
        #expect(out.last == UInt8(ascii: "\n"))
        #expect(out.filter { $0 == UInt8(ascii: "\n") }.count == 1)
        return (try? JSONSerialization.jsonObject(with: Data(out))) as? [String: Any] ?? [:]
    }

    @Test func dataIsTextWhenValidUTF8AndBase64Otherwise() {
        var encoder = LogLineEncoder()
        let text = line(.data(.stdout, Array("hé \"quoted\" \\ \n\t\u{1}".utf8)), encoder: &encoder)
        #expect(text["time"] as? String == "2023-11-14T22:13:20.123456Z")
        #expect(text["session"] as? Int == 3)
        #expect(text["stream"] as? String == "stdout")
        #expect(text["data"] as? String == "hé \"quoted\" \\ \n\t\u{1}")
        #expect(text["base64"] == nil)
        let binary = line(.data(.stderr, [0xFF, 0x00, 0x41]), encoder: &encoder)
        #expect(binary["base64"] as? String == "/wBB")
        #expect(binary["data"] == nil)
    }

    @Test func aCharacterSplitAcrossFramesStaysText() {
        var encoder = LogLineEncoder()
        let euro = Array("€".utf8)  // E2 82 AC
        let first = line(.data(.stdout, Array("price: ".utf8) + euro.prefix(2)), encoder: &encoder)
        #expect(first["data"] as? String == "price: ")
        let second = line(.data(.stdout, Array(euro.suffix(1)) + Array("5".utf8)), encoder: &encoder)
        #expect(second["data"] as? String == "€5")
        // What is still carried when the session ends is written, as base64.
        _ = line(.data(.stdout, [0xE2]), encoder: &encoder)
        var out: [UInt8] = []
        encoder.encode(timeNs: 0, session: 3, event: .end, into: &out)
        let lines = String(decoding: out, as: UTF8.self).split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines.first?.contains(#""base64":"4g==""#) == true)
        #expect(lines.last?.contains(#""event":"end""#) == true)
    }

    @Test func markersNameTheirEvent() {
        var encoder = LogLineEncoder()
        let exec = line(.exec(argv: ["sh", "-c", "echo hi"], cwd: "/tmp", user: nil, tty: false, stdin: true, detach: false),
                        encoder: &encoder)
        #expect(exec["event"] as? String == "exec")
        #expect(exec["argv"] as? [String] == ["sh", "-c", "echo hi"])
        #expect(exec["stdin"] as? Bool == true)
        let exited = line(.exited(.signal(9)), encoder: &encoder)
        #expect(exited["event"] as? String == "exited")
        #expect(exited["signal"] as? Int == 9)
        let failed = line(.failed(Failed(kind: .notFound, errno: 2, stage: .exec, message: "no")), encoder: &encoder)
        #expect(failed["kind"] as? String == "notFound")
        let dropped = line(.logDropped(entries: 4, bytes: 100), session: 0, encoder: &encoder)
        #expect(dropped["entries"] as? Int == 4)
    }

    @Test func aLinesSessionIsFoundWithoutParsingIt() {
        #expect(LogFollower.session(of: Array(#"{"time":"x","session":42,"stream":"stdout"}"#.utf8)) == 42)
        #expect(LogFollower.session(of: Array(#"{"time":"x","session":0,"event":"relayStarted"}"#.utf8)) == 0)
        #expect(LogFollower.session(of: Array("garbage".utf8)) == nil)
    }

    @Test func base64MatchesFoundation() {
        for count in 0..<10 {
            let bytes = (0..<count).map { UInt8(truncatingIfNeeded: $0 * 37 + 11) }
            #expect(Base64.encode(bytes[...]) == Data(bytes).base64EncodedString())
        }
    }
}

@Suite(.serialized, .timeLimit(.minutes(1))) struct ExecLogTests {
    @Test func filesRotateAtTheSizeAndOnlySoManyAreKept() throws {
        let directory = try TemporaryDirectory("log")
        var configuration = ExecLog.Configuration(directory: directory.path)
        configuration.maxFileBytes = 4096
        configuration.files = 3
        let log = try ExecLog(configuration, diagnostics: { _ in })
        log.start()
        for i in 0..<400 { log.record(session: 1, .data(.stdout, Array("line \(i) ".utf8) + [UInt8](repeating: 0x61, count: 100))) }
        log.close()
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(names == ["exec.log", "exec.log.1", "exec.log.2"])
        for name in names {
            let size = try FileManager.default.attributesOfItem(atPath: directory.file(name))[.size] as? Int ?? 0
            #expect(size <= 4096)
            let text = try String(contentsOfFile: directory.file(name), encoding: .utf8)
            #expect(text.hasSuffix("}\n"))  // whole lines only
        }
        let newest = try String(contentsOfFile: directory.file("exec.log"), encoding: .utf8)
        #expect(newest.contains("line 399 "))
    }

    @Test func aFullQueueDropsAndSaysSo() throws {
        let directory = try TemporaryDirectory("log")
        var configuration = ExecLog.Configuration(directory: directory.path)
        configuration.queueBytes = 1000
        let log = try ExecLog(configuration, diagnostics: { _ in })
        // Not started yet: nothing drains the queue.
        for _ in 0..<10 { log.record(session: 2, .data(.stdout, [UInt8](repeating: 0x62, count: 300))) }
        log.start()
        log.record(session: 2, .end)
        log.close()
        let text = try String(contentsOfFile: directory.file("exec.log"), encoding: .utf8)
        let lines = text.split(separator: "\n")
        #expect(lines.filter { $0.contains(#""stream":"stdout""#) }.count == 2)
        #expect(text.contains(#""event":"logDropped","entries":8,"bytes":2400"#))
        #expect(lines.last?.contains(#""event":"end""#) == true)
    }

    /// Reads what a follower delivers until it ends or `until` holds.
    final class Collector: Sendable {
        let state = Mutex<(bytes: [UInt8], ended: Bool)>(([], false))
        let changed = DispatchSemaphore(value: 0)
        func deliver(_ output: LogFollower.Output) {
            state.withLock { state in
                switch output {
                case .bytes(let bytes): state.bytes += bytes
                case .end: state.ended = true
                }
            }
            changed.signal()
        }
        func wait(until condition: ((bytes: [UInt8], ended: Bool)) -> Bool) -> Bool {
            while !state.withLock({ condition($0) }) {
                if changed.wait(timeout: .now() + 20) == .timedOut { return false }
            }
            return true
        }
        var text: String { String(decoding: state.withLock { $0.bytes }, as: UTF8.self) }
    }

    @Test func aFollowerReadsTheHistoryThenNewLinesAcrossRotations() throws {
        let directory = try TemporaryDirectory("log")
        var configuration = ExecLog.Configuration(directory: directory.path)
        configuration.maxFileBytes = 2048
        // Enough files to hold the whole burst below (about 10 KiB): a follower the machine
        // does not schedule while the writer rotates past every kept file loses what was
        // deleted (retention bounds the log, not the followers), which is not under test here.
        configuration.files = 8
        let log = try ExecLog(configuration, diagnostics: { _ in })
        log.start()
        for i in 0..<20 { log.record(session: i % 2 == 0 ? 7 : 8, .data(.stdout, Array("old \(i)\n".utf8))) }
        let collector = Collector()
        let follower = try LogFollower(log: log, session: 7, follow: true, initialCredit: 1 << 20) { collector.deliver($0) }
        // Whatever of the history the writer has not written yet arrives by following.
        follower.start()
        #expect(collector.wait { String(decoding: $0.bytes, as: UTF8.self).contains(#"old 18\n"#) })
        // New lines, enough for several rotations while following.
        for i in 0..<60 { log.record(session: 7, .data(.stdout, Array("new \(i) ".utf8) + [UInt8](repeating: 0x63, count: 80))) }
        #expect(collector.wait { String(decoding: $0.bytes, as: UTF8.self).contains("new 59 ") })
        follower.cancel()
        #expect(collector.wait { $0.ended })
        log.close()
        let lines = collector.text.split(separator: "\n")
        #expect(lines.allSatisfy { $0.contains(#""session":7,"#) })
        for i in stride(from: 0, to: 20, by: 2) { #expect(lines.filter { $0.contains("old \(i)\\n") }.count == 1) }
        for i in 0..<60 { #expect(lines.filter { $0.contains("new \(i) ") }.count == 1, "new \(i)") }
    }

    @Test func aFollowerSendsNoMoreThanItsCredit() throws {
        let directory = try TemporaryDirectory("log")
        let log = try ExecLog(ExecLog.Configuration(directory: directory.path), diagnostics: { _ in })
        log.start()
        for i in 0..<50 { log.record(session: 1, .data(.stdout, Array("line \(i)\n".utf8))) }
        log.close()
        let collector = Collector()
        let follower = try LogFollower(log: log, session: nil, follow: false, initialCredit: 100) { collector.deliver($0) }
        follower.start()
        #expect(collector.wait { $0.bytes.count == 100 })
        #expect(collector.state.withLock { $0.bytes.count } == 100)
        follower.grant(1 << 20)
        #expect(collector.wait { $0.ended })
        #expect(collector.text.contains("line 49"))
    }
}
