#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport

/// `tether ps`, `kill`, `logs`, `ping`, `exec --detach` and `attach` through a real relay
/// process to a real agent.
@Suite(.serialized, .timeLimit(.minutes(3))) struct CLISessionTests {
    /// A command line holding ESC and newlines is one escaped line of `tether ps`: the table
    /// keeps its shape and nothing reaches the terminal raw.
    @Test func psPrintsAControlCharacterCommandOnOneEscapedLine() throws {
        let live = try LiveRelay("ps-escape")
        let started = try live.cli(["exec", "--detach", "--", "sh", "-c", "sleep 1000 # \u{1B}[31mred\nsecond line"])
        let number = try #require(UInt32(started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)), "\(started)")
        let ps = try live.cli(["ps"])
        #expect(!ps.stdout.contains("\u{1B}"), "\(ps)")
        let lines = ps.stdout.split(separator: "\n")
        #expect(lines.count == 2, "\(ps)")
        let row = try #require(lines.first { $0.split(separator: " ").first == Substring(String(number)) }, "\(ps)")
        #expect(row.hasSuffix(#"sh -c 'sleep 1000 # \e[31mred\nsecond line'"#), "\(row)")
        _ = try live.cli(["kill", "--signal", "KILL", String(number)])
    }

    @Test func detachPsKillAndAttach() throws {
        let live = try LiveRelay()
        let started = try live.cli(["exec", "--detach", "--", "sh", "-c", "sleep 0.2; echo later; sleep 1000"])
        #expect(started.status == 0, "\(started)")
        let number = try #require(started.stdout.split(separator: "\n").last.flatMap { UInt32($0) }, "\(started)")

        let ps = try live.cli(["ps"])
        #expect(ps.status == 0, "\(ps)")
        let lines = ps.stdout.split(separator: "\n")
        #expect(lines.first?.hasPrefix("SESSION") == true, "\(ps)")
        let row = try #require(lines.first { $0.split(separator: " ").first == Substring(String(number)) }, "\(ps)")
        #expect(row.contains("detached") && row.contains("sh -c 'sleep 0.2; echo later; sleep 1000'"), "\(row)")
        let json = try live.cli(["ps", "--json"])
        let parsed = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]]
        #expect(parsed?.contains { ($0["session"] as? Int) == Int(number) && ($0["detached"] as? Bool) == true } == true, "\(json)")

        // Written while nobody watched: in exec.log under its number, and kept for attach.
        #expect(eventually { (try? live.cli(["logs", "--session", String(number)]))?.stdout.contains(#""data":"later\n""#) == true })
        let killed = try live.cli(["kill", "--signal", "TERM", String(number)])
        #expect(killed.status == 0, "\(killed)")
        #expect(eventually { (try? live.cli(["ps"]))?.stdout.contains("killed 15") == true })

        // What it wrote while detached comes first, then its status as the exit status.
        let attached = try live.cli(["attach", String(number)])
        #expect(attached.status == 128 + SIGTERM, "\(attached)")
        #expect(attached.stdout == "later\n", "\(attached)")

        let unknown = try live.cli(["kill", "9999"])
        #expect(unknown.status == 1, "\(unknown)")
        #expect(unknown.stderr.contains("9999") && unknown.stderr.contains("-> ") || unknown.stderr.contains("unknownSession"), "\(unknown)")
        let again = try live.cli(["attach", String(number)])
        #expect(again.status == 125, "a finished session is picked up once: \(again)")
        #expect(again.stderr.hasPrefix("tether: "), "\(again)")
    }

    /// `N=$(tether exec --detach ...)` holds the session number and nothing else, even when the
    /// command writes before the detach is taken.
    @Test func execDetachPrintsOnlyTheNumberOnStdout() throws {
        let live = try LiveRelay("detachnumber")
        let started = try live.cli(["exec", "--detach", "--", "sh", "-c", "echo early; sleep 1"])
        #expect(started.status == 0, "\(started)")
        let number = try #require(UInt32(started.stdout.trimmingCharacters(in: .newlines)), "stdout: \(started.stdout)")
        #expect(started.stdout == "\(number)\n")
        #expect(!started.stdout.contains("early"))
    }

    /// A program that closes its stdin early is not a failure, but what it missed is said.
    @Test func stdinThatCouldNotBeDeliveredIsAWarning() throws {
        let live = try LiveRelay("stdinwarn")
        let input = String(repeating: "x", count: 1 << 20)
        let result = try live.cli(["exec", "-i", "--", "sh", "-c", "exec 0<&-; sleep 0.5; echo done"], stdin: input)
        #expect(result.status == 0 && result.stdout == "done\n", "\(result)")
        #expect(result.stderr.contains("tether: warning: stdin: the program closed its stdin"), "\(result.stderr)")
    }

    @Test func aTimeoutExits124AndSaysSo() throws {
        let live = try LiveRelay("timeout-cli")
        let result = try live.cli(["exec", "--timeout", "1s", "--", "sleep", "5"])
        #expect(result.status == 124, "\(result)")
        #expect(result.stderr == "tether: exec: timed out after 1s (killed by signal 15)\n  -> raise --timeout, or make the command finish sooner\n",
                "\(result.stderr)")
    }

    @Test func rlimitAndKillGraceReachTheCommand() throws {
        let live = try LiveRelay("rlimit")
        let limited = try live.cli(["exec", "--rlimit", "nofile=77", "--rlimit", "core=0:unlimited", "--",
                                    "sh", "-c", "ulimit -n; ulimit -Sc; ulimit -Hc"])
        #expect(limited.status == 0 && limited.stdout == "77\n0\nunlimited\n", "\(limited)")
        // A command that ignores SIGTERM is SIGKILLed once the grace after the timeout is over.
        let stubborn = try live.cli(["exec", "--timeout", "200ms", "--kill-grace", "300ms", "--",
                                     "sh", "-c", "trap '' TERM; sleep 30"])
        #expect(stubborn.status == 124 && stubborn.stderr.contains("killed by signal 9"), "\(stubborn)")
        let bad = try live.cli(["exec", "--rlimit", "nofiles=1", "--", "true"])
        #expect(bad.status == 2 && bad.stderr.contains("nofiles"), "\(bad)")
        let inverted = try live.cli(["exec", "--rlimit", "nofile=10:5", "--", "true"])
        #expect(inverted.status == 2 && inverted.stderr.contains("above the hard limit"), "\(inverted)")
    }

    /// stdin is keystrokes in a terminal session, typed passwords included: exec.log leaves it
    /// out unless the relay was started with --log-stdin.
    @Test func execLogHoldsNoStdinUnlessAsked() throws {
        for logStdin in [false, true] {
            let live = try LiveRelay("logstdin", relayArguments: logStdin ? ["--log-stdin"] : [])
            let result = try live.cli(["exec", "-i", "--", "sh", "-c", "read line; echo read it"], stdin: "typed-secret\n")
            #expect(result.status == 0 && result.stdout == "read it\n", "\(result)")
            // The session's exit is logged after its stdin and output: once it is there, so is
            // the stdin, if it is logged at all.
            let read = { (try? String(contentsOfFile: live.logPath, encoding: .utf8)) ?? "" }
            #expect(eventually { read().contains("read it") && read().contains("exited") }, "\(read())")
            let final = read()
            #expect(final.contains("typed-secret") == logStdin, "--log-stdin \(logStdin):\n\(final)")
        }
    }

    @Test func attachSaysWhatTheReplayLost() throws {
        let live = try LiveRelay(relayArguments: ["--replay-bytes", "1k"])
        let started = try live.cli(["exec", "--detach", "--", "sh", "-c", "sleep 0.3; seq 1 5000; exit 3"])
        let number = try #require(started.stdout.split(separator: "\n").last.flatMap { UInt32($0) }, "\(started)")
        #expect(eventually { (try? live.cli(["ps"]))?.stdout.contains("exited 3") == true })
        let attached = try live.cli(["attach", String(number)])
        #expect(attached.status == 3, "\(attached)")
        #expect(attached.stdout.hasSuffix("4999\n5000\n"))
        let total = (1...5000).reduce(0) { $0 + String($1).utf8.count + 1 }
        let lost = total - attached.stdout.utf8.count
        #expect(lost > 0)
        #expect(attached.stderr.contains("\(lost) bytes"), "the lost count is the bytes missing: \(attached)")
    }

    @Test func logsPrintsAndFollowsExecLogBySession() throws {
        let live = try LiveRelay()
        _ = try live.cli(["exec", "--", "echo", "first-session"])
        _ = try live.cli(["exec", "--", "sh", "-c", "echo second-session >&2"])
        let all = try live.cli(["logs"])
        #expect(all.status == 0, "\(all)")
        let lines = all.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(lines.count == all.stdout.split(separator: "\n").count, "every line is JSON: \(all.stdout)")
        let first = try #require(lines.first { ($0["data"] as? String) == "first-session\n" }, "\(all.stdout)")
        #expect(first["stream"] as? String == "stdout")
        #expect(first["time"] != nil)
        let session = try #require(first["session"] as? Int)
        let second = try #require(lines.first { ($0["data"] as? String) == "second-session\n" }, "\(all.stdout)")
        #expect(second["stream"] as? String == "stderr")

        let one = try live.cli(["logs", "--session", String(session)])
        #expect(one.status == 0)
        #expect(one.stdout.contains("first-session") && !one.stdout.contains("second-session"), "\(one)")

        let follow = try live.startCLI(["logs", "--follow"])
        #expect(follow.waitForOutput("second-session"))
        _ = try live.cli(["exec", "--", "echo", "third-session"])
        #expect(follow.waitForOutput("third-session"), "a follower sees new lines: \(follow.stdout)")
        follow.signal(SIGINT)
        #expect(follow.wait(timeout: 20) == 0, "interrupting a follow ends it cleanly: \(follow.stderr)")
    }

    @Test func pingPrintsTheRoundTrip() throws {
        let live = try LiveRelay()
        let ping = try live.cli(["ping", "-c", "3", "--interval", "10ms"])
        #expect(ping.status == 0, "\(ping)")
        let lines = ping.stdout.split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines.allSatisfy { $0.hasPrefix("pong from agent") && $0.contains("time=") && $0.hasSuffix(" ms") }, "\(ping)")
    }

    @Test func theCLIReportsAnAgentKilledMidStream() throws {
        let live = try LiveRelay()
        let cli = try live.startCLI(["exec", "--", "sh", "-c", "echo $$; while :; do echo tick; sleep 0.05; done"])
        #expect(cli.waitForOutput("tick"))
        let group = Int32(cli.stdout.split(separator: "\n").first ?? "") ?? 0
        live.agent.signal(SIGKILL)
        let status = cli.wait(timeout: 30)
        if group > 0 { kill(-group, SIGKILL) }
        #expect(status == 125, "stderr: \(cli.stderr)")
        #expect(cli.stderr.contains("agentGone") || cli.stderr.contains("agent"), "\(cli.stderr)")
        #expect(cli.stderr.contains("-> "), "\(cli.stderr)")
    }
}

/// A frozen agent (SIGSTOP: its socket stays open, nothing answers) through the CLI.
@Suite(.serialized, .timeLimit(.minutes(2))) struct UnresponsiveAgentTests {
    @Test func aFrozenAgentIsReportedAsUnresponsiveUntilItAnswersAgain() throws {
        let live = try LiveRelay(relayArguments: ["--ping-interval", "100ms", "--unresponsive-after", "600ms"])
        #expect(try live.cli(["ping"]).status == 0)
        let running = try live.startCLI(["exec", "--", "sh", "-c", "echo go; sleep 1.5; echo finished"])
        #expect(running.waitForOutput("go"))
        kill(live.agent.pid, SIGSTOP)
        defer { kill(live.agent.pid, SIGCONT) }
        // A ping in flight when the silence passes the limit fails then (the relay tells every
        // client on the control channel).
        let ping = try live.cli(["ping"], timeout: 20)
        #expect(ping.status == 1, "\(ping)")
        #expect(ping.stderr.contains("no frame from the agent"), "\(ping)")
        #expect(ping.stderr.hasPrefix("tether: ping: "), "\(ping)")
        // New requests are refused at once while it stays silent.
        let last = try live.cli(["exec", "--connect-timeout", "0s", "--", "true"], timeout: 20)
        #expect(last.stderr.contains("agentUnresponsive") || last.stderr.contains("not answered"), "\(last)")
        #expect(last.status == 125, "\(last)")
        #expect(last.stderr.hasPrefix("tether: exec: "), "\(last)")
        // The session in flight was told, and keeps waiting rather than failing.
        #expect(running.waitForOutput("warning: no frame from the agent", onStandardError: true), "\(running.stderr)")
        kill(live.agent.pid, SIGCONT)
        #expect(running.wait(timeout: 30) == 0, "\(running.stderr)")
        #expect(running.stdout == "go\nfinished\n")
        #expect(eventually(within: 20) { (try? live.cli(["exec", "--", "echo", "back"]))?.stdout == "back\n" })
    }

    /// A command waiting on a frozen agent fails with agentUnresponsive once the agent has
    /// been silent for --agent-timeout, well before the relay's own (longer) limit, and the
    /// relay then kills what the command started.
    @Test func aCommandOnAFrozenAgentFailsAfterItsAgentTimeout() throws {
        let live = try LiveRelay("frozen", relayArguments: ["--unresponsive-after", "60s"])
        let running = try live.startCLI(["exec", "--agent-timeout", "1s", "--", "sh", "-c", "echo go; sleep 600"])
        #expect(running.waitForOutput("go"))
        kill(live.agent.pid, SIGSTOP)
        defer { kill(live.agent.pid, SIGCONT) }
        // Not a hang: it ends by itself (the test's own bound is far above the deadline).
        let status = running.wait(timeout: 30)
        #expect(status == 125, "stdout \(running.stdout) stderr \(running.stderr)")
        let first = running.stderr.split(separator: "\n").first.map(String.init) ?? ""
        #expect(first.hasPrefix("tether: exec: the agent did not answer for "), "\(running.stderr)")
        #expect(first.hasSuffix("(limit 1s)"), "\(running.stderr)")
        #expect(running.stderr.contains("-> the sandbox is overloaded or frozen"), "\(running.stderr)")

        // As JSON, the code a script branches on.
        let json = try live.startCLI(["exec", "--json", "--agent-timeout", "500ms", "--connect-timeout", "0s", "--", "true"])
        #expect(json.wait(timeout: 30) == 125, "\(json.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(json.stderr.utf8)) as? [String: Any]
        #expect(object?["code"] as? String == "agentUnresponsive", "\(json.stderr)")

        // Once it thaws, the abandoned command is gone and new ones run.
        kill(live.agent.pid, SIGCONT)
        #expect(eventually(within: 20) { (try? live.cli(["exec", "--", "echo", "back"]))?.stdout == "back\n" })
        #expect(eventually(within: 20) { live.sessionProcesses().isEmpty }, "left behind: \(live.sessionProcesses())")
    }
}
