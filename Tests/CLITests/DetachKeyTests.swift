import Testing
@testable import tether

/// The detach keys as `--detach-key` spells them, and finding them in typed input that the
/// terminal hands over in arbitrary chunks.
@Suite struct DetachKeyTests {
    func keys(_ text: String) throws -> DetachKeys { try DetachKeys(parsing: text, command: "shell") }

    @Test func spellings() throws {
        #expect(try keys("ctrl-]").bytes == [0x1D])
        #expect(try keys("ctrl-p,ctrl-q").bytes == [0x10, 0x11])
        #expect(try keys("CTRL-A").bytes == [0x01])
        #expect(try keys("ctrl-@,x").bytes == [0x00, 0x78])
        #expect(try keys("none").bytes.isEmpty)
        #expect(try keys("ctrl-p,ctrl-q").description == "ctrl-P,ctrl-Q")
        for bad in ["ctrl-1", "ctrl-", "alt-x", "ctrl-p,,", "éé", "ctrl-ab"] {
            #expect(throws: UsageError.self, "\(bad)") { try keys(bad) }
        }
    }

    /// Feeds `chunks` and returns what was forwarded and whether it detached.
    func run(_ spelling: String, _ chunks: [[UInt8]]) throws -> (forwarded: [UInt8], detached: Bool) {
        var matcher = DetachMatcher(try keys(spelling))
        var forwarded: [UInt8] = []
        for chunk in chunks {
            let (forward, detach) = matcher.feed(chunk[...])
            forwarded += forward
            if detach { return (forwarded, true) }
        }
        return (forwarded, false)
    }

    @Test func aSingleKeyDetachesAndWhatCameBeforeGoesThrough() throws {
        let result = try run("ctrl-]", [Array("ls\r".utf8) + [0x1D] + Array("after".utf8)])
        #expect(result.forwarded == Array("ls\r".utf8))
        #expect(result.detached)
        #expect(try run("ctrl-]", [Array("plain".utf8)]) == (Array("plain".utf8), false))
    }

    @Test func aSequenceMatchesAcrossChunksAndAFailedPartialMatchIsInput() throws {
        let split = try run("ctrl-p,ctrl-q", [[0x61, 0x10], [0x11]])
        #expect(split.forwarded == [0x61])
        #expect(split.detached)
        // ctrl-p then something else: both are ordinary input, in order.
        let failed = try run("ctrl-p,ctrl-q", [[0x10], [0x62, 0x63]])
        #expect(failed.forwarded == [0x10, 0x62, 0x63])
        #expect(!failed.detached)
        // ctrl-p ctrl-p ctrl-q: the first ctrl-p is input, the rest detaches.
        let repeated = try run("ctrl-p,ctrl-q", [[0x10, 0x10, 0x11]])
        #expect(repeated.forwarded == [0x10])
        #expect(repeated.detached)
        #expect(try run("none", [[0x1D, 0x10, 0x11]]) == ([0x1D, 0x10, 0x11], false))
    }
}

@Suite struct ArgumentTests {
    let options = [OptionSpec("-e", "--env", value: true), OptionSpec("-i", "--interactive"), OptionSpec("-t", "--tty")]

    @Test func conventions() throws {
        let parsed = try parseArguments(["-e", "A=1", "--env=B=2", "-eC=3", "-it", "--", "-x", "y"][...], command: "exec",
                                        options: options)
        #expect(parsed.all("env") == ["A=1", "B=2", "C=3"])
        #expect(parsed.has("interactive") && parsed.has("tty"))
        #expect(parsed.positionals == ["-x", "y"])
        let exec = try parseArguments(["-i", "ls", "-l", "--tty"][...], command: "exec", options: options, stopAtFirstPositional: true)
        #expect(exec.positionals == ["ls", "-l", "--tty"])
        #expect(!exec.has("tty"))
        #expect(throws: UsageError.self) { try parseArguments(["--env"][...], command: "exec", options: options) }
        #expect(throws: UsageError.self) { try parseArguments(["--tty=1"][...], command: "exec", options: options) }
        #expect(throws: UsageError.self) { try parseArguments(["-z"][...], command: "exec", options: options) }
    }

    @Test func durationsSignalsAndSizes() throws {
        #expect(try parseDuration("500ms", option: "--timeout", command: "exec") == .milliseconds(500))
        #expect(try parseDuration("2m", option: "--timeout", command: "exec") == .seconds(120))
        #expect(try parseSignal("SIGTERM", command: "kill") == 15)
        #expect(try parseSignal("kill", command: "kill") == 9)
        #expect(throws: UsageError.self) { try parseSignal("FOO", command: "kill") }
        #expect(try parseByteCount("64k", option: "--replay-bytes", command: "relay") == 65536)
        #expect(throws: UsageError.self) { try parseDuration("soon", option: "--timeout", command: "exec") }
    }
}
