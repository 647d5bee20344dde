import Testing
@testable import tether

/// Every option a command's parser takes is named in its --help. The options come from the
/// parser's own table (`Command.options` plus `TetherCLI.commonOptions`), so an option added
/// to a parser without a help line fails here.
@Suite struct HelpCoverageTests {
    @Test func everyOptionTheParserAcceptsIsInItsCommandsHelp() throws {
        #expect(commands.count >= 13)
        for command in commands {
            let table = command.options + TetherCLI.commonOptions
            for spec in table {
                for name in spec.names {
                    // The parser accepts it (with a value when it takes one)...
                    let arguments = spec.takesValue ? [name, "1"] : [name]
                    let parsed = try parseArguments(arguments[...], command: command.name, options: table)
                    #expect(spec.takesValue ? parsed.value(spec.key) == "1" : parsed.has(spec.key), "\(command.name) \(name)")
                    // ...and the help names it as an option, not only in passing.
                    #expect(mentions(command.help, name), "`tether \(command.name) --help` does not list \(name)")
                }
            }
        }
    }

    @Test func theOptionsThatWereMissingAreListedNow() {
        for option in ["--replace-grace", "--handshake-timeout", "--hostname", "--name", "--rootfs", "--json"] {
            #expect(mentions(BootCommand.help, option), "boot: \(option)")
        }
        #expect(mentions(RunCommand.help, "--replace-grace") && mentions(RunCommand.help, "--hostname"))
        #expect(mentions(ExecCommand.help, "--agent-timeout") && mentions(ShellCommand.help, "--agent-timeout"))
        #expect(TetherCLI.usage.contains("--json") && TetherCLI.usage.contains("TETHER_ERRORS=json"))
        // The check itself: a longer option does not count for a shorter one.
        #expect(!mentions("  --replace-grace D   the grace", "--replace"))
    }

    @Test func jsonIsFoundAmongTheOptionsButNotInTheCommandToRun() {
        #expect(TetherCLI.wantsJSONErrors(["--json", "--", "x"], command: ExecCommand.self))
        #expect(TetherCLI.wantsJSONErrors(["-w", "/tmp", "--json", "--", "x"], command: ExecCommand.self))
        #expect(!TetherCLI.wantsJSONErrors(["echo", "--json"], command: ExecCommand.self))
        #expect(!TetherCLI.wantsJSONErrors(["--", "echo", "--json"], command: ExecCommand.self))
        #expect(!TetherCLI.wantsJSONErrors(["sh", "--json"], command: RunCommand.self))
        #expect(TetherCLI.wantsJSONErrors(["dev", "--json"], command: StopCommand.self))
    }

    /// `name` as a word of the help text: followed by a space, comma, '=', ']' or the end of a
    /// line, so `--replace` is not found inside `--replace-grace`.
    func mentions(_ help: String, _ name: String) -> Bool {
        var searchStart = help.startIndex
        while let range = help.range(of: name, range: searchStart..<help.endIndex) {
            let next = range.upperBound < help.endIndex ? help[range.upperBound] : "\n"
            let before = range.lowerBound > help.startIndex ? help[help.index(before: range.lowerBound)] : " "
            if " ,=]\n".contains(next) && " [,(".contains(before) { return true }
            searchStart = range.upperBound
        }
        return false
    }
}
