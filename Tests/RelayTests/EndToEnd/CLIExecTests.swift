#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport

/// `tether exec` through a real relay process to a real agent: exit statuses as a shell
/// script sees them, error blocks, stdin from a pipe.
@Suite(.serialized, .timeLimit(.minutes(3))) struct CLIExecTests {
    @Test func exitStatusIsTheProgramsCodeOr128PlusTheSignal() throws {
        let live = try LiveRelay()
        let ok = try live.cli(["exec", "--", "sh", "-c", "echo out; echo err >&2"])
        #expect(ok.status == 0, "\(ok)")
        #expect(ok.stdout == "out\n")
        #expect(ok.stderr == "err\n")
        let code = try live.cli(["exec", "--", "sh", "-c", "exit 42"])
        #expect(code.status == 42, "\(code)")
        #expect(code.stderr.isEmpty, "a program's own exit status is not a tether error: \(code)")
        let term = try live.cli(["exec", "--", "sh", "-c", "kill -TERM $$"])
        #expect(term.status == 128 + SIGTERM, "\(term)")
        let kill = try live.cli(["exec", "--", "sh", "-c", "kill -KILL $$"])
        #expect(kill.status == 128 + SIGKILL, "\(kill)")
    }

    /// One command per spawn failure kind the CLI can provoke: status, and a block that says
    /// what failed and a `->` hint.
    @Test func spawnFailuresExit127126Or1WithAnErrorBlock() throws {
        let live = try LiveRelay()
        let notExecutable = try live.directory.write("plain.txt", "just text\n", mode: 0o644)
        let garbage = try live.directory.write("garbage", "\u{7f}XYZ not a binary\n", mode: 0o755)
        let cases: [(arguments: [String], status: Int32, kind: String)] = [
            (["exec", "--", "/no/such/program"], 127, "not found"),
            (["exec", "--", "no-such-program-anywhere"], 127, "not found"),
            (["exec", "--", notExecutable], 126, "permission denied"),
            (["exec", "--", garbage], 126, "not an executable"),
            (["exec", "--", live.directory.path], 126, "permission denied"),
            (["exec", "-w", "/no/such/dir", "--", "true"], 1, "working directory"),
            (["exec", "-u", "no-such-user-xyz", "--", "true"], 1, "no such user or group: user 'no-such-user-xyz' not found"),
            (["exec", "-u", "", "--", "true"], 1, "invalid user"),
        ]
        for item in cases {
            let result = try live.cli(item.arguments)
            #expect(result.status == item.status, "\(item.arguments): \(result)")
            #expect(result.stdout.isEmpty, "\(item.arguments): \(result)")
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.first?.hasPrefix("tether: exec: ") == true, "\(item.arguments): \(result)")
            #expect(item.kind.isEmpty || result.stderr.contains(item.kind), "\(item.arguments): \(result)")
            #expect(lines.contains { $0.trimmingCharacters(in: .whitespaces).hasPrefix("-> ") }, "no hint: \(result)")
        }
    }

    /// `--json` (or TETHER_ERRORS=json): the error is one JSON object on stderr, whatever
    /// failed, with the fields the README lists; the exit status does not change.
    @Test func jsonErrorsAreOneObjectWithTheDocumentedFields() throws {
        let live = try LiveRelay("json")
        func object(_ result: CLIResult) throws -> [String: Any] {
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.count == 1, "not one line: \(result)")
            return try #require(try JSONSerialization.jsonObject(with: Data(result.stderr.utf8)) as? [String: Any], "\(result)")
        }
        let missing = try live.cli(["exec", "--json", "--", "no-such-program"])
        #expect(missing.status == 127, "\(missing)")
        let fields = try object(missing)
        #expect(fields["code"] as? String == "spawnFailed")
        #expect(fields["operation"] as? String == "exec")
        #expect((fields["message"] as? String)?.contains("program not found") == true)
        #expect((fields["context"] as? [String: String])?["argv"] == "no-such-program")
        #expect(fields["suggestion"] is String)
        #expect(fields["errno"] as? Int == Int(ENOENT))
        #expect(fields["timestamp"] is String)
        // The same through the environment, and for a usage mistake.
        let usage = try live.cli(["exec", "--no-such-option", "--", "true"], environment: ["TETHER_ERRORS": "json"])
        #expect(usage.status == 2, "\(usage)")
        #expect(try object(usage)["code"] as? String == "usage")
        // `tether --json COMMAND` too; and a --json that belongs to the command run is its own.
        let notRunning = try live.cli(["--json", "exec", "--sandbox", "no-such-sandbox", "--", "true"])
        #expect(notRunning.status == 125, "\(notRunning)")
        #expect(try object(notRunning)["code"] as? String == "notRunning")
        let echoed = try live.cli(["exec", "--", "echo", "--json"])
        #expect(echoed.stdout == "--json\n" && echoed.stderr.isEmpty, "\(echoed)")
    }

    @Test func stdinPipedFromTheCLIReachesTheProgram() throws {
        let live = try LiveRelay()
        // echo hi | tether exec -i -- cat
        let cat = try live.cli(["exec", "-i", "--", "cat"], stdin: "hi\n")
        #expect(cat.status == 0, "\(cat)")
        #expect(cat.stdout == "hi\n")
        // More than one stdin window (256 KiB), and EOF after it.
        let big = String(repeating: "0123456789abcdef", count: 40_000)
        let wc = try live.cli(["exec", "-i", "--", "wc", "-c"], stdin: big)
        #expect(wc.status == 0, "\(wc)")
        #expect(wc.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == String(big.utf8.count))
        // Without -i the program reads /dev/null.
        let none = try live.cli(["exec", "--", "cat"], stdin: "ignored\n")
        #expect(none.status == 0 && none.stdout.isEmpty, "\(none)")
    }

    @Test func optionsReachTheProgram() throws {
        let live = try LiveRelay()
        let result = try live.cli(["exec", "-e", "A=1", "--env=B=two words", "-w", "/tmp", "--", "sh", "-c", "echo $A-$B-$(pwd)"])
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == "1-two words-/tmp\n")
        let timeout = try live.cli(["exec", "--timeout", "300ms", "--", "sleep", "30"])
        // GNU timeout's convention: 124, and the reason on stderr.
        #expect(timeout.status == 124, "\(timeout)")
        #expect(timeout.stderr.contains("timed out after 300ms (killed by signal 15)"), "\(timeout)")
    }

    @Test func aCLIKilledMidStreamLeavesNoProcessBehind() throws {
        let live = try LiveRelay()
        let cli = try live.startCLI(["exec", "--", "sh", "-c", "echo started; sleep 1000 & while :; do echo tick; sleep 0.2; done"])
        #expect(cli.waitForOutput("started"))
        #expect(!live.sessionProcesses().isEmpty)
        cli.signal(SIGKILL)
        _ = cli.wait(timeout: 10)
        #expect(eventually { live.sessionProcesses().isEmpty }, "left behind: \(live.sessionProcesses())")
    }

    @Test func signalsToTheCLIGoToTheRemoteProgram() throws {
        let live = try LiveRelay()
        let cli = try live.startCLI(["exec", "--", "sh", "-c", "trap 'echo got INT; exit 7' INT; echo ready; while :; do sleep 0.1; done"])
        #expect(cli.waitForOutput("ready"))
        cli.signal(SIGINT)
        let status = cli.wait(timeout: 20)
        #expect(status == 7, "stdout \(cli.stdout) stderr \(cli.stderr)")
        #expect(cli.stdout.contains("got INT"))
    }

    @Test func relayProblemsAreErrorBlocksWithAHint() throws {
        let none = try runTether(["exec", "--", "true"])
        #expect(none.status == 2, "\(none)")
        #expect(none.stderr.contains("no relay to talk to") && none.stderr.contains("-> "), "\(none)")

        let gone = try runTether(["ping", "--socket", "unix:/tmp/no-such-relay.sock", "--connect-timeout", "200ms"])
        #expect(gone.status == 1, "\(gone)")
        #expect(gone.stderr.hasPrefix("tether: "), "\(gone)")
        #expect(gone.stderr.contains("-> "), "\(gone)")

        let execGone = try runTether(["exec", "--socket", "unix:/tmp/no-such-relay.sock", "--connect-timeout", "200ms", "--", "true"])
        #expect(execGone.status == 125, "\(execGone)")

        let usage = try runTether(["exec", "--bogus", "--", "true"])
        #expect(usage.status == 2, "\(usage)")
        #expect(usage.stderr.contains("unknown option --bogus") && usage.stderr.contains("-> see `tether exec --help`"), "\(usage)")

        let unknown = try runTether(["frobnicate"])
        #expect(unknown.status == 2 && unknown.stderr.contains("-> "), "\(unknown)")
    }

    @Test func everyCommandHasHelp() throws {
        let top = try runTether(["--help"])
        #expect(top.status == 0, "\(top)")
        let names = top.stdout.split(separator: "\n").drop { !$0.hasPrefix("Commands:") }.dropFirst()
            .prefix { $0.hasPrefix("  ") }.compactMap { $0.split(separator: " ").first.map(String.init) }
        #expect(Set(names).isSuperset(of: ["exec", "shell", "attach", "ps", "kill", "logs", "ping", "relay"]), "\(names)")
        for name in names {
            for spelling in [[name, "--help"], [name, "-h"], ["help", name]] {
                let result = try runTether(spelling)
                #expect(result.status == 0, "\(spelling): \(result)")
                #expect(result.stdout.hasPrefix("usage: tether \(name)"), "\(spelling): \(result)")
                #expect(result.stderr.isEmpty)
            }
        }
    }
}
