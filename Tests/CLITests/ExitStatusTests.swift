import Testing
import TetherClient
import TetherProtocol
@testable import tether

/// The CLI's one mapping from how things ended to its exit status, as a shell script sees it.
@Suite struct ExitStatusTests {
    func spawnFailure(_ kind: SpawnFailureKind) -> TetherError {
        TetherError.init(.spawnFailed, "did not start", operation: "exec",
                         spawn: Failed(kind: kind, errno: 2, stage: .exec, message: ""))
    }

    @Test func programsEndAsAShellWouldReportThem() {
        #expect(CLIExit.status(ExitStatus(code: 3)) == 3)
        #expect(CLIExit.status(ExitStatus(signal: 9)) == 137)
        #expect(CLIExit.status(for: spawnFailure(.notFound), .program) == 127)
        #expect(CLIExit.status(for: spawnFailure(.permissionDenied), .program) == 126)
        #expect(CLIExit.status(for: spawnFailure(.notExecutable), .program) == 126)
        #expect(CLIExit.status(for: spawnFailure(.badCwd), .program) == 1)
        #expect(CLIExit.status(for: spawnFailure(.unrecognized("fromANewerAgent")), .program) == 1)
        #expect(CLIExit.status(for: TetherError(.remote(.agentGone), "gone", operation: "exec"), .program) == 125)
        #expect(CLIExit.status(for: TetherError(.relayUnreachable, "no relay", operation: "exec"), .program) == 125)
    }

    @Test func otherCommandsFailWithOne() {
        #expect(CLIExit.status(for: spawnFailure(.notFound), .command) == 1)
        #expect(CLIExit.status(for: TetherError(.remote(.agentGone), "gone", operation: "ps"), .command) == 1)
    }

    @Test func everySpawnFailureKindHasASummaryAndKnownOnesASuggestionWhereOneHelps() {
        for kind in SpawnFailureKind.known {
            let error = spawnFailure(kind)
            #expect(!error.message.isEmpty)
            if kind == .notFound { #expect(error.suggestion == "check the program name and PATH inside the sandbox") }
        }
        let relayGone = TetherError(.remote(.agentNotReady), "later", operation: "exec")
        #expect(relayGone.isTransient)
        #expect(relayGone.suggestion == "the sandbox is still starting or restarting; try again shortly")
    }
}
