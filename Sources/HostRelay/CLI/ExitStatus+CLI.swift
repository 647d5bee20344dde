import TetherClient
import TetherProtocol

/// The CLI's exit statuses, decided here and nowhere else. A command that runs a program
/// (exec, shell, attach) ends as the shell would: the program's own status, 127 and 126 when
/// it could not start, 124 when its timeout ended it, 125 when tether itself failed; other commands end 0 or 1; a usage
/// mistake is 2 everywhere.
enum CLIExit {
    static let success: Int32 = 0
    static let failure: Int32 = 1
    static let usage: Int32 = 2
    /// Tether failed (relay or agent unreachable, agent gone) while running a program.
    static let tetherFailed: Int32 = 125
    static let notExecutable: Int32 = 126
    static let notFound: Int32 = 127
    /// The program's timeout ran out (GNU timeout's convention), whatever it then exited with.
    static let timedOut: Int32 = 124

    /// Which convention a command's failures follow.
    enum Convention: Sendable {
        /// exec, shell, attach: the remote program's status, as a shell reports a local one.
        case program
        /// Everything else: 1 for any failure.
        case command
    }

    /// A remote program's end: its code, or 128 + the signal that killed it; 124 when its
    /// timeout ended it, after saying so on stderr.
    static func status(_ exit: ExitStatus, timeout: String? = nil, operation: String = "exec") -> Int32 {
        guard exit.timedOut else { return exit.shellStatus }
        ErrorBlock.report(TetherError(.timedOut, "timed out after \(timeout ?? "its timeout") (\(exit.ending))", operation: operation,
                                      suggestion: "raise --timeout, or make the command finish sooner"), operation: operation)
        return timedOut
    }

    /// Any error a command threw, under its convention: usage mistakes 2, the CLI's own
    /// errors their status, library errors as below, anything else 1.
    static func status(for error: any Error, _ convention: Convention) -> Int32 {
        switch error {
        case is UsageError: usage
        case let error as CLIError: error.exitStatus
        case let error as TetherError: status(for: error, convention)
        default: failure
        }
    }

    /// A library failure under a command's convention.
    static func status(for error: TetherError, _ convention: Convention) -> Int32 {
        guard convention == .program else { return failure }
        guard let spawn = error.spawn else { return tetherFailed }
        switch spawn.kind {
        case .notFound: return notFound
        case .permissionDenied, .notExecutable: return notExecutable
        case .badCwd, .badArgs, .resourceLimit, .userSetupFailed, .outOfMemory, .ptySetupFailed,
             .other, .unrecognized:
            return failure
        }
    }
}
