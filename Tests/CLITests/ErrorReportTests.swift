import Foundation
import Testing
@testable import TetherClient
import TetherProtocol
import TetherSandbox
@testable import tether

/// The one error path of the CLI: the text block's exact first line for a few errors, and the
/// JSON object's fields for the same errors.
@Suite struct ErrorReportTests {
    func spawn(_ kind: SpawnFailureKind, errno: Int32, stage: SpawnStage, message: String) -> TetherError {
        TetherError.spawnFailed(Failed(kind: kind, errno: errno, stage: stage, message: message), operation: "exec",
                                context: ["argv": "x"])
    }

    func fields(_ report: ErrorReport) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(report.json.utf8))
        return try #require(object as? [String: Any])
    }

    @Test func theFirstLineSaysEachThingOnce() {
        // The agent's message begins with the summary and names the errno: neither twice.
        let cwd = spawn(.badCwd, errno: 2, stage: .chdir,
                        message: "cannot change to the working directory: ENOENT (No such file or directory)")
        #expect(ErrorReport(cwd, operation: "exec").text.split(separator: "\n").first
                == "tether: exec: cannot change to the working directory: ENOENT (No such file or directory) (stage chdir)")
        // A message without the errno gets it once, in words.
        let found = spawn(.notFound, errno: 2, stage: .exec, message: "")
        #expect(ErrorReport(found, operation: "exec").text.split(separator: "\n").first
                == "tether: exec: program not found (stage exec, errno 2: No such file or directory)")
        // An empty -u is a bad user, and the hint says how to write one (not "a NUL byte").
        let user = spawn(.badArgs, errno: 22, stage: .user, message: "user '' is not name, uid, name:group or uid:gid")
        let userText = ErrorReport(user, operation: "exec").text
        #expect(userText.split(separator: "\n").first
                == "tether: exec: invalid user: user '' is not name, uid, name:group or uid:gid (stage user, errno 22: Invalid argument)")
        #expect(userText.contains("  -> give the user as a name, uid, name:group or uid:gid\n"), "\(userText)")
        #expect(!userText.contains("NUL"))
        let unknown = spawn(.userSetupFailed, errno: 2, stage: .user, message: "user 'nobody2' not found in the guest's /etc/passwd or /etc/group")
        #expect(ErrorReport(unknown, operation: "exec").text.contains("-> check the name against the sandbox's /etc/passwd"))
    }

    @Test func sandboxAndUsageErrorsUseTheSameBlock() {
        let conflict = ErrorReport(SandboxError.nameConflict(name: "dev", pid: 42), operation: "boot").text
        #expect(conflict == """
            tether: boot: a sandbox named 'dev' is already running (supervisor pid 42)
              -> use --replace to stop it and boot a new one, or `tether stop dev` first

            """)
        let failure = BootFailure(stage: .rootfs, errno: 2, message: "rootfs /nope: No such file or directory", hint: "pass --rootfs DIR")
        #expect(ErrorReport(SandboxError.bootFailed(failure), operation: "boot").text.split(separator: "\n").first
                == "tether: boot: the sandbox did not boot (stage rootfs): rootfs /nope: No such file or directory")
        let usage = ErrorReport(UsageError(message: "unknown option --x", command: "exec"), operation: "exec").text
        #expect(usage == "tether: exec: unknown option --x\n  -> see `tether exec --help`\n")
        let unknownCommand = ErrorReport(UsageError(message: "unknown command 'frob'", command: nil), operation: "tether").text
        #expect(unknownCommand == "tether: unknown command 'frob'\n  -> see `tether --help`\n")
    }

    @Test func jsonHasEveryFieldAndErrnoOnlyWhenThereIsOne() throws {
        let conflict = try fields(ErrorReport(SandboxError.nameConflict(name: "dev", pid: 42), operation: "boot"))
        #expect(conflict["code"] as? String == "nameConflict")
        #expect(conflict["operation"] as? String == "boot")
        #expect((conflict["context"] as? [String: String]) == ["name": "dev", "pid": "42"])
        #expect(conflict["suggestion"] is String)
        #expect(conflict["timestamp"] is String)
        #expect(conflict["errno"] == nil)
        #expect(Set(conflict.keys) == ["code", "message", "operation", "context", "suggestion", "timestamp"])

        let failure = BootFailure(stage: .agentExec, errno: 2, message: "the agent is missing", hint: nil)
        let boot = try fields(ErrorReport(SandboxError.bootFailed(failure), operation: "boot"))
        #expect(boot["code"] as? String == "bootFailed")
        #expect(boot["errno"] as? Int == 2)
        #expect((boot["context"] as? [String: String])?["stage"] == "agent-exec")

        let usage = try fields(ErrorReport(UsageError(message: "no command to run", command: "exec"), operation: "exec"))
        #expect(usage["code"] as? String == "usage")
        #expect(usage.keys.contains("suggestion"))

        let missing = try fields(ErrorReport(spawn(.notFound, errno: 2, stage: .exec, message: ""), operation: "exec"))
        #expect(missing["code"] as? String == "spawnFailed")
        #expect(missing["errno"] as? Int == 2)
        #expect((missing["context"] as? [String: String])?["argv"] == "x")
    }

    @Test func exitStatusesFollowTheErrorsKind() {
        #expect(CLIExit.status(for: UsageError(message: "x", command: "exec"), .program) == CLIExit.usage)
        #expect(CLIExit.status(for: SandboxError.notRunning(name: "x"), .command) == CLIExit.failure)
        #expect(CLIExit.status(for: CLIError(message: "x", exitStatus: 125), .command) == 125)
    }
}
