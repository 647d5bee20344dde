#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
import TetherProtocol

/// Sessions on a pseudo-terminal (the agent side of PTY sessions).
@Suite struct PtyTests {
    func tty(_ argv: [OSString], rows: UInt16 = 24, cols: UInt16 = 80) -> ExecRequest {
        ExecRequest(argv: argv, tty: TerminalSize(rows: rows, cols: cols))
    }

    /// Reads stdout of `id` until `text` has appeared; returns everything read.
    func readUntil(_ client: FrameClient, id: UInt32, contains text: String) throws -> String {
        var output = ""
        while !output.contains(text) {
            let frame = try client.next(id: id)
            if frame.kind == .stdout { output += String(decoding: frame.payload, as: UTF8.self) }
            if frame.flags.contains(.end) { throw ClientError("session ended before '\(text)' appeared: \(output)") }
        }
        return output
    }

    @Test(.timeLimit(.minutes(1)))
    func theTerminalHasTheRequestedSizeANameAndIsControlling() throws {
        let agent = try startAgent()
        let t = try run(agent, tty(["/bin/sh", "-c", "stty size; tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty; echo $TERM"], rows: 33, cols: 101))
        let lines = t.stdoutText.split(separator: "\r\n").map(String.init)
        #expect(lines.count == 4, "\(t.stdoutText)")
        #expect(lines.first == "33 101")
        #expect(lines.dropFirst().first?.hasPrefix("/dev/pts/") == true)
        #expect(lines.dropFirst(2).first == "all-tty")
        #expect(lines.last == "xterm-256color")
        #expect(t.stderr.isEmpty)
        #expect(t.exited == .code(0))
    }

    @Test(.timeLimit(.minutes(1)))
    func resizeChangesTheSizeAndSignalsTheProgram() throws {
        let agent = try startAgent()
        let client = agent.client
        try client.exec(tty(["/bin/sh", "-c", "trap 'echo winch' WINCH; stty size; echo ready; read x; stty size"]), id: 1)
        _ = try readUntil(client, id: 1, contains: "ready")
        // The agent applies the size before it writes the newline that ends `read`.
        try client.send(Resize(rows: 50, cols: 132), id: 1)
        try client.sendData(id: 1, Array("\n".utf8))
        let t = try client.collect(id: 1)
        #expect(t.stdoutText.contains("50 132"))
        #expect(t.stdoutText.contains("winch"))
        #expect(t.exited == .code(0))
    }

    @Test(.timeLimit(.minutes(1)))
    func controlCInterruptsAndControlDEnds() throws {
        let agent = try startAgent()
        let client = agent.client
        try client.exec(tty(["/bin/sh", "-c", "echo ready; exec cat"]), id: 1)
        _ = try readUntil(client, id: 1, contains: "ready")
        try client.sendData(id: 1, Array("typed\n".utf8))
        _ = try readUntil(client, id: 1, contains: "typed\r\ntyped\r\n")
        try client.sendData(id: 1, [0x03])
        #expect(try client.collect(id: 1).exited == .signal(SIGINT))

        try client.exec(tty(["/bin/sh", "-c", "echo ready; exec cat"]), id: 2)
        _ = try readUntil(client, id: 2, contains: "ready")
        try client.sendData(id: 2, [0x04])
        let ended = try client.collect(id: 2)
        #expect(ended.exited == .code(0), "\(ended)")
    }

    /// GNU cat, and anything else that closes its stdio on the way out, closes the last slave
    /// descriptor before it exits. The master then reads EIO; hanging it up at that moment
    /// would SIGHUP the still-running leader (seen as cat "killed by SIGHUP" after ^D).
    @Test(.timeLimit(.minutes(1)))
    func aProgramThatClosesItsTerminalBeforeExitingIsNotHungUp() throws {
        let agent = try startAgent()
        let t = try run(agent, tty(["/bin/sh", "-c", "echo closing; exec 0<&- 1>&- 2>&-; sleep 0.3; exit 3"]))
        #expect(t.stdoutText == "closing\r\n")
        #expect(t.exited == .code(3), "\(t)")
    }

    @Test(.timeLimit(.minutes(1)))
    func endOfStdinOnATerminalIsTheEOFCharacter() throws {
        let agent = try startAgent()
        let client = agent.client
        try client.exec(tty(["/bin/sh", "-c", "stty -echo; echo ready; cat; echo cat-ended"]), id: 1)
        _ = try readUntil(client, id: 1, contains: "ready")
        // A partial line: the first VEOF hands it over, the second is the end of input.
        try client.sendData(id: 1, Array("partial".utf8))
        try client.sendData(id: 1, [], flags: .end)
        let t = try client.collect(id: 1)
        #expect(t.stdoutText.contains("partialcat-ended"))
        #expect(t.exited == .code(0))
    }

    @Test(.timeLimit(.minutes(1)))
    func aFullScreenProgramsOutputArrivesIntact() throws {
        let agent = try startAgent()
        // Escape sequences and a large burst: what the program writes is what arrives
        // (the line discipline adds CR before LF, and nothing else).
        let script = "printf '\\033[2J\\033[H'; i=0; while [ $i -lt 2000 ]; do printf '\\033[1;31m%05d\\033[0m abcdefghijklmnopqrstuvwxyz\\n' $i; i=$((i+1)); done"
        let t = try run(agent, tty(["/bin/sh", "-c", OSString(script)]))
        var expected = "\u{1B}[2J\u{1B}[H"
        for i in 0..<2000 { expected += "\u{1B}[1;31m" + String(format: "%05d", i) + "\u{1B}[0m abcdefghijklmnopqrstuvwxyz\r\n" }
        #expect(t.stdoutText == expected)
        #expect(t.exited == .code(0))
    }
}
