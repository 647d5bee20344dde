#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherClient
import TetherProtocol

/// tmux, if installed (scripts/deps.sh installs it).
let tmuxPath: String? = ["/usr/bin/tmux", "/usr/local/bin/tmux", "/bin/tmux"].first { FileManager.default.isExecutableFile(atPath: $0) }

/// A real terminal for the CLI: a private tmux server whose one pane runs a local /bin/sh
/// (prompt `local$ `) with TETHER_SOCKET set; keys are typed with send-keys and the screen
/// read with capture-pane. The server is killed when the value goes.
final class TmuxTerminal {
    let server: String
    let tether = Binaries.product("tether").path

    init(socket: String, width: Int = 100, height: Int = 30) throws {
        server = "tether-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let environment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm", "HOME=/tmp",
                           "PS1=local$ ", "TETHER_SOCKET=\(socket)", "ENV="]
        let shell = (["env", "-i"] + environment + ["/bin/sh"]).map { "'\($0)'" }.joined(separator: " ")
        // The server this starts outlives the command and keeps its stdout: give it /dev/null,
        // or reading the command's output would wait for the server to exit.
        let start = try TmuxTerminal.run(["/bin/sh", "-c", "exec \"$0\" \"$@\" </dev/null >/dev/null 2>&1", tmuxPath ?? "tmux", "-L", server,
                                          "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", String(width), "-y", String(height), shell])
        guard start.status == 0 else { throw ClientError("tmux new-session failed: \(start.output)") }
        guard waitForScreen("local$") else { throw ClientError("the local shell did not start:\n\(screen())") }
    }

    deinit { _ = try? tmux(["kill-server"]) }

    @discardableResult
    func tmux(_ arguments: [String]) throws -> String {
        let result = try TmuxTerminal.run([tmuxPath ?? "tmux", "-L", server] + arguments)
        guard result.status == 0 else { throw ClientError("tmux \(arguments): \(result.output)") }
        return result.output
    }

    /// Runs a command to its end with posix_spawn and waitpid (bounded: killed after 20 s).
    static func run(_ argv: [String]) throws -> (status: Int32?, output: String) {
        let process = try ChildProcess(argv)
        let status = process.wait(timeout: 20)
        return (status, process.stdout + process.stderr)
    }

    /// Types `text` and Enter.
    func type(_ text: String) throws {
        try tmux(["send-keys", "-t", "t", "-l", text])
        try tmux(["send-keys", "-t", "t", "Enter"])
    }

    /// Sends keys by tmux name (`C-c`, `C-]`).
    func key(_ name: String) throws { try tmux(["send-keys", "-t", "t", name]) }

    func screen() -> String { (try? tmux(["capture-pane", "-p", "-t", "t", "-S", "-200"])) ?? "" }

    func waitForScreen(_ text: String, timeout: Double = 20) -> Bool { eventually(within: timeout) { screen().contains(text) } }

    func resize(width: Int, height: Int) throws {
        try tmux(["resize-window", "-t", "t", "-x", String(width), "-y", String(height)])
    }

    /// Waits until the CLI (every child of the local shell) is gone. Keys typed before that
    /// would be read by the CLI's stdin thread and sent to a session that has ended.
    func waitForLocalShell() throws {
        let shell = try shellPID()
        guard eventually(within: 20, { childProcesses(of: shell).isEmpty }) else {
            throw ClientError("tether is still running in the pane:\n\(screen())")
        }
    }

    /// The pid of the local shell in the pane.
    func shellPID() throws -> Int32 {
        guard let pid = Int32(try tmux(["display-message", "-p", "-t", "t", "#{pane_pid}"]).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw ClientError("no pane pid")
        }
        return pid
    }

    /// Runs `command` in the local shell and returns the text it printed between two markers.
    /// `$st` in it is the exit status of the command before (`$?` is the marker's).
    func local(_ command: String) throws -> String {
        let tag = "m\(UInt16.random(in: 0...UInt16.max))"
        // The markers are built by the shell, so the typed command line never matches them.
        try type("st=$?; echo \(tag)-$((1+1)); \(command); echo \(tag)-$((2+2))")
        guard waitForScreen("\(tag)-4") else { throw ClientError("no output from \(command):\n\(screen())") }
        let text = screen()
        guard let start = text.range(of: "\(tag)-2\n"), let end = text.range(of: "\(tag)-4", range: start.upperBound..<text.endIndex) else {
            throw ClientError("cannot find the markers:\n\(text)")
        }
        return String(text[start.upperBound..<end.lowerBound])
    }

    /// The local terminal's line settings as a user checks them with `stty -a`.
    func localTerminalFlags() throws -> String {
        try local("for f in icanon echo isig icrnl opost; do stty -a | tr ' ;' '\\n\\n' | grep -qx -- \"$f\" && printf \"$f=on \" || printf \"$f=off \"; done; echo")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static let sane = "icanon=on echo=on isig=on icrnl=on opost=on"

    /// Types `command` in the remote shell and waits for a marker the remote shell computes.
    func remote(_ command: String) throws -> Bool {
        let tag = "r\(UInt16.random(in: 0...UInt16.max))"
        try type("\(command); echo \(tag)-$((3+4))")
        return waitForScreen("\(tag)-7")
    }
}

@Suite(.serialized, .enabled(if: tmuxPath != nil, "tmux is not installed (scripts/deps.sh installs it); no real terminal to test in"),
       .timeLimit(.minutes(3)))
struct TerminalTests {
    @Test func shellRunsOnATerminalThatFollowsTheWindowAndExitStatusPassesThrough() throws {
        let live = try LiveRelay("tty")
        let term = try TmuxTerminal(socket: live.socket, width: 100, height: 30)
        try term.type("\(term.tether) shell")
        #expect(try term.remote("echo mark-$((20+22)); stty size; tty"), "\(term.screen())")
        let screen = term.screen()
        #expect(screen.contains("mark-42\n30 100\n/dev/pts/"), "\(screen)")

        try term.resize(width: 120, height: 40)
        #expect(try term.remote("stty size"), "\(term.screen())")
        #expect(term.screen().contains("\n40 120\n"), "\(term.screen())")

        try term.type("exit 3")
        try term.waitForLocalShell()
        #expect(try term.local("echo status=$st").contains("status=3"), "\(term.screen())")
        #expect(try term.localTerminalFlags() == TmuxTerminal.sane)
        #expect(eventually { live.sessionProcesses().isEmpty })
    }

    @Test func ctrlCReachesTheRemoteProgramNotTheCLI() throws {
        let live = try LiveRelay("tty")
        let term = try TmuxTerminal(socket: live.socket)
        try term.type("\(term.tether) shell")
        #expect(try term.remote("true"), "\(term.screen())")
        // The remote sh expands $((...)) inside the single quotes; the typed line never shows the results.
        try term.type("sh -c 'trap \"echo caught-int-$((1+1)); exit 0\" INT; echo wait-$((5+5)); while :; do sleep 1; done'")
        #expect(term.waitForScreen("wait-10"), "\(term.screen())")
        try term.key("C-c")
        #expect(term.waitForScreen("caught-int-2"), "\(term.screen())")
        // The remote shell (and the CLI) are still there.
        #expect(try term.remote("echo still-$((1+1))"), "\(term.screen())")
        try term.type("exit")
        try term.waitForLocalShell()
        #expect(try term.local("echo status=$st").contains("status=0"))
    }

    @Test func detachLeavesTheShellRunningAndAttachComesBack() throws {
        let live = try LiveRelay("tty")
        let term = try TmuxTerminal(socket: live.socket)
        try term.type("\(term.tether) shell")
        #expect(try term.remote("KEPT=kept-value"), "\(term.screen())")
        try term.key("C-]")
        #expect(term.waitForScreen("tether: detached from session"), "\(term.screen())")
        try term.waitForLocalShell()
        let line = try #require(term.screen().split(separator: "\n").first { $0.contains("detached from session") })
        let number = try #require(line.split(separator: " ").drop { $0 != "session" }.dropFirst().first.flatMap { UInt32($0.dropLast()) },
                                  "\(line)")
        #expect(try term.local("echo status=$st").contains("status=0"))
        #expect(try term.localTerminalFlags() == TmuxTerminal.sane)
        #expect(!live.sessionProcesses().isEmpty, "the shell is still running")
        #expect(try term.local("\(term.tether) ps").contains("detached"))

        try term.type("\(term.tether) attach \(number)")
        #expect(try term.remote("echo $KEPT-$((1+1))"), "\(term.screen())")
        #expect(term.screen().contains("kept-value-2"), "\(term.screen())")
        try term.type("exit 4")
        try term.waitForLocalShell()
        #expect(try term.local("echo status=$st").contains("status=4"), "\(term.screen())")
        #expect(try term.localTerminalFlags() == TmuxTerminal.sane)
    }

    @Test func aTerminalSessionStartedDetachedIsInteractiveOnAttach() throws {
        let live = try LiveRelay("tty")
        let started = try live.cli(["exec", "-t", "--detach", "--", "sh", "-c", "stty size; read line; stty size; echo got-$line; exit 7"])
        let number = try #require(started.stdout.split(whereSeparator: \.isNewline).last.flatMap { UInt32($0) }, "\(started)")
        let term = try TmuxTerminal(socket: live.socket, width: 90, height: 20)
        try term.type("\(term.tether) attach \(number)")
        // Started at the CLI's default 24x80 without a terminal; attaching resizes it to this
        // window. Output that came before the detach was taken is printed by `exec --detach`
        // itself (on stderr: its stdout is the number alone), the rest is replayed on attach.
        #expect(started.stdout == "\(number)\n", "\(started)")
        #expect(started.stderr.contains("24 80") || term.waitForScreen("24 80"), "\(started)\n\(term.screen())")
        try term.type("typed")
        #expect(term.waitForScreen("got-typed"), "\(term.screen())")
        #expect(term.screen().contains("20 90\n"), "\(term.screen())")
        try term.waitForLocalShell()
        #expect(try term.local("echo status=$st").contains("status=7"), "\(term.screen())")
        #expect(try term.localTerminalFlags() == TmuxTerminal.sane)
    }

    @Test func theDetachKeysAreConfigurable() throws {
        let live = try LiveRelay("tty")
        let term = try TmuxTerminal(socket: live.socket)
        try term.type("\(term.tether) shell --detach-key ctrl-p,ctrl-q")
        #expect(try term.remote("true"), "\(term.screen())")
        // ctrl-] is an ordinary key now, and ctrl-p alone goes through as well.
        try term.key("C-]")
        try term.key("C-p")
        try term.key("C-u")
        #expect(try term.remote("echo alive-$((2+3))"), "\(term.screen())")
        try term.key("C-p")
        try term.key("C-q")
        #expect(term.waitForScreen("tether: detached from session"), "\(term.screen())")
        try term.waitForLocalShell()
        #expect(try term.localTerminalFlags() == TmuxTerminal.sane)
    }

    @Test(arguments: [SIGTERM, SIGHUP, SIGINT])
    func aSignalToTheCLIRestoresTheTerminal(_ signal: Int32) throws {
        let live = try LiveRelay("tty")
        let term = try TmuxTerminal(socket: live.socket)
        try term.type("\(term.tether) shell")
        #expect(try term.remote("true"), "\(term.screen())")
        let shell = try term.shellPID()
        let cli = try #require(childProcesses(of: shell).first?.pid)
        kill(cli, signal)
        try term.waitForLocalShell()
        #expect(try term.local("echo status=$st").contains("status=\(128 + signal)"), "\(term.screen())")
        #expect(try term.localTerminalFlags() == TmuxTerminal.sane)
        #expect(eventually { live.sessionProcesses().isEmpty }, "the remote shell goes with the CLI")
    }

    @Test func anErrorRestoresTheTerminal() throws {
        let live = try LiveRelay("tty")
        let term = try TmuxTerminal(socket: live.socket)
        try term.type("\(term.tether) shell")
        #expect(try term.remote("true"), "\(term.screen())")
        let left = live.sessionProcesses()
        live.agent.signal(SIGKILL)
        for pid in left { kill(pid, SIGKILL) }
        #expect(term.waitForScreen("-> "), "an error block: \(term.screen())")
        try term.waitForLocalShell()
        #expect(try term.local("echo status=$st").contains("status=125"), "\(term.screen())")
        #expect(try term.localTerminalFlags() == TmuxTerminal.sane)
    }

    @Test func execPicksATerminalWhenItHasOneAndNoTTYRefuses() throws {
        let live = try LiveRelay("tty")
        let term = try TmuxTerminal(socket: live.socket)
        #expect(try term.local("\(term.tether) exec -- tty").contains("/dev/pts/"), "\(term.screen())")
        #expect(try term.local("\(term.tether) exec --no-tty -- tty; echo status=$?").contains("not a tty"), "\(term.screen())")
        #expect(try term.local("\(term.tether) exec -- sh -c 'exit 5'; echo status=$?").contains("status=5"))
        #expect(try term.localTerminalFlags() == TmuxTerminal.sane)

        // Without a terminal: no pty unless -t forces one.
        let plain = try live.cli(["exec", "--", "tty"])
        #expect(plain.stdout.contains("not a tty"), "\(plain)")
        let forced = try live.cli(["exec", "-t", "--", "tty"])
        #expect(forced.status == 0 && forced.stdout.hasPrefix("/dev/pts/"), "\(forced)")
        let both = try live.cli(["exec", "-t", "--no-tty", "--", "tty"])
        #expect(both.status == 2, "\(both)")
        // A shell without a terminal reads its commands from stdin.
        let piped = try live.cli(["shell"], stdin: "echo piped-$((1+1)) shell=$SHELL\nexit 6\n")
        #expect(piped.status == 6, "\(piped)")
        // The agent runs on this host in these tests, so its /etc/passwd is the one here.
        let passwd = (try? String(contentsOfFile: "/etc/passwd", encoding: .utf8)) ?? ""
        let entry = passwd.split(separator: "\n").first { $0.split(separator: ":", omittingEmptySubsequences: false).dropFirst(2).first == Substring(String(getuid())) }
        let loginShell = entry.flatMap { $0.split(separator: ":", omittingEmptySubsequences: false).last.map(String.init) } ?? "/bin/sh"
        let expected = FileManager.default.isExecutableFile(atPath: loginShell) ? loginShell : "/bin/sh"
        #expect(piped.stdout.contains("piped-2 shell=\(expected)\n"), "the login shell of /etc/passwd: \(piped)")
    }
}

/// PTY sessions through the library: `ExecOptions.tty`, `resize`, `attach`.
@Suite(.serialized, .timeLimit(.minutes(2))) struct PTYLibraryTests {
    @Test func aPTYSessionHasItsSizeFollowsResizeAndCanBeReattached() async throws {
        let live = try LiveRelay("pty")
        let client = try await live.client()
        defer { client.close() }
        let handle = try await client.execStream(["sh", "-c", "stty size; tty; read x; stty size; read y; echo got-$y"],
                                                 ExecOptions(tty: TerminalSize(rows: 30, cols: 100), detach: true))
        #expect(handle.isTerminal)
        let writer = try #require(handle.takeStdin())
        var text = ""
        var iterator = handle.events.makeAsyncIterator()
        while !text.contains("/dev/pts/"), let event = try await iterator.next() {
            if case .stdout(let bytes) = event { text += String(decoding: bytes, as: UTF8.self) }
            if case .stderr = event { Issue.record("a pty session's output is all stdout") }
        }
        #expect(text.hasPrefix("30 100\r\n"), "\(text)")
        handle.resize(rows: 40, cols: 120)
        try await writer.write("\r")
        while !text.contains("40 120"), let event = try await iterator.next() {
            if case .stdout(let bytes) = event { text += String(decoding: bytes, as: UTF8.self) }
        }
        #expect(text.contains("40 120\r\n"))

        let number = try await handle.detach()
        let again = try await client.attach(session: number)
        #expect(again.isTerminal)
        let input = try #require(again.takeStdin())
        try await input.write("back\r")
        let output = try await again.collect()
        #expect(output.stdoutText.contains("got-back"), "\(output.stdoutText)")
        #expect(output.exitCode == 0)
    }
}
