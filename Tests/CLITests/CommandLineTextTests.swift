import Testing
import TetherProtocol
@testable import tether

/// Command lines from the guest or other clients reach the terminal escaped, on one line.
@Suite struct CommandLineTextTests {
    @Test func controlCharactersAreEscapedAndWordsStayApart() {
        #expect(CommandLineText.render(["sh", "-c", "echo hi"]) == "sh -c 'echo hi'")
        #expect(CommandLineText.render(["printf", "\u{1B}[2J\nrm -rf /\r"]) == #"printf '\e[2J\nrm -rf /\r'"#)
        #expect(CommandLineText.render(["a\tb", "", "back\\slash", "bell\u{07}", "c1\u{9B}"])
                == #"a\tb '' back\\slash bell\x07 c1\x9b"#)
        #expect(CommandLineText.render(["it's"]) == #"'it\'s'"#)
        #expect(CommandLineText.render(["héllo", "日本"]) == "héllo 日本")
    }

    @Test func psPrintsACommandWithEscapesAndNewlinesOnOneLine() {
        let hostile = SessionInfo(session: 3, pid: 42, argv: ["sh", "-c", "printf '\u{1B}]0;owned\u{07}'\necho hi"],
                                  tty: false, detached: true, attached: false, startedNs: 0, exited: nil)
        let table = PsCommand.renderTable([hostile])
        let lines = table.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
        #expect(lines.count == 2, "\(table)")
        #expect(!table.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x07 })
        #expect(lines.last?.hasSuffix(#"sh -c 'printf \'\e]0;owned\x07\'\necho hi'"#) == true, "\(table)")
    }
}
