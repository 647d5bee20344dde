#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix

/// Why a sandbox operation (boot, stop, list) failed. `message` says what went wrong and
/// `hint` what to do; the CLI prints them as an error block.
public enum SandboxError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Not a usable sandbox name.
    case invalidName(String)
    /// A live sandbox already has this name (its supervisor holds the lock); `pid` is the
    /// running one's supervisor, when state.json names it.
    case nameConflict(name: String, pid: Int32?)
    /// No sandbox of that name is running.
    case notRunning(name: String)
    /// The sandbox did not come up; the details (stage, errno, message, hint) are what
    /// `boot-error.json` holds.
    case bootFailed(BootFailure)
    /// libkrun (or a symbol it needs) could not be loaded on this host.
    case krunUnavailable(KrunLoadError)
    /// Reading or writing the sandbox's files under $TETHER_HOME failed.
    case state(operation: String, path: String, message: String)
    /// A program Tether runs beside the CLI is missing.
    case missingProgram(path: String)
    /// Something needs privileges this process lacks.
    case needsRoot(what: String)
    /// The sandbox outlived SIGKILL and the wait after it.
    case stopTimedOut(name: String, pid: Int32)
    /// A directory or file of host state is not safe to use (another owner, open mode, a link
    /// in its place); nothing was touched.
    case unsafeState(UnsafePathError)
    /// state.json names a process that is not the sandbox's supervisor (not alive, started at
    /// another time than recorded, or not holding the sandbox's lock); nothing was signalled.
    case untrustedState(name: String, pid: Int32, reason: String)

    public var message: String {
        switch self {
        case .invalidName(let name):
            "'\(name)' is not a valid sandbox name"
        case .nameConflict(let name, let pid):
            "a sandbox named '\(name)' is already running" + (pid.map { " (supervisor pid \($0))" } ?? "")
        case .notRunning(let name):
            "no sandbox named '\(name)' is running"
        case .bootFailed(let failure):
            failure.description
        case .krunUnavailable(let error):
            error.message
        case .state(let operation, let path, let message):
            "cannot \(operation) \(path): \(message)"
        case .missingProgram(let path):
            "\(path) is missing"
        case .needsRoot(let what):
            "\(what) needs root (namespaces, mounts and pivot_root)"
        case .stopTimedOut(let name, let pid):
            "sandbox '\(name)' (pid \(pid)) is still there after SIGKILL"
        case .unsafeState(let error):
            error.message
        case .untrustedState(let name, let pid, let reason):
            "sandbox '\(name)': its state.json names pid \(pid), which is not its supervisor (\(reason)); nothing was signalled"
        }
    }

    public var hint: String? {
        switch self {
        case .invalidName:
            "use 1-\(SandboxName.maxLength) letters, digits, '.', '_' or '-', starting with a letter or digit"
        case .nameConflict(let name, _):
            "use --replace to stop it and boot a new one, or `tether stop \(name)` first"
        case .notRunning:
            "`tether ls` lists the sandboxes"
        case .bootFailed(let failure):
            failure.hint
        case .krunUnavailable(let error):
            error.hint
        case .state:
            "check that $TETHER_HOME (default ~/.tether) is writable"
        case .missingProgram:
            "build everything with `swift build` (tether-sandbox and tether-agent sit beside tether)"
        case .needsRoot:
            "run as root, or use --backend krun on a host with libkrun"
        case .stopTimedOut:
            "the process may be stuck in the kernel (D state); see `ps -o stat,wchan -p PID`"
        case .unsafeState(let error):
            error.hint ?? "check the ownership and mode of $TETHER_HOME (default ~/.tether) and what is in it"
        case .untrustedState:
            "state.json was changed by someone else or is left from an earlier sandbox; `tether ls` shows what runs"
        }
    }

    /// The errno behind the failure, when there is one.
    public var errno: Int32? {
        switch self {
        case .bootFailed(let failure): failure.errno == 0 ? nil : failure.errno
        case .krunUnavailable(let error): error.errno
        case .unsafeState(let error): error.errno.rawValue
        default: nil
        }
    }

    /// The case's name, as `--json` reports it (`nameConflict`, `bootFailed`, ...).
    public var code: String {
        switch self {
        case .invalidName: "invalidName"
        case .nameConflict: "nameConflict"
        case .notRunning: "notRunning"
        case .bootFailed: "bootFailed"
        case .krunUnavailable: "krunUnavailable"
        case .state: "stateFailed"
        case .missingProgram: "missingProgram"
        case .needsRoot: "needsRoot"
        case .stopTimedOut: "stopTimedOut"
        case .unsafeState: "unsafeState"
        case .untrustedState: "untrustedState"
        }
    }

    /// The values the message is made of, by name, for tools that branch on them.
    public var context: [String: String] {
        switch self {
        case .invalidName(let name), .notRunning(let name): ["name": name]
        case .nameConflict(let name, let pid): ["name": name].merging(pid.map { ["pid": String($0)] } ?? [:]) { a, _ in a }
        case .bootFailed(let failure): ["stage": failure.stage.rawValue]
        case .state(_, let path, _), .missingProgram(let path): ["path": path]
        case .stopTimedOut(let name, let pid), .untrustedState(let name, let pid, _): ["name": name, "pid": String(pid)]
        case .unsafeState(let error): ["path": error.path]
        case .krunUnavailable, .needsRoot: [:]
        }
    }

    public var description: String { message + (hint.map { "\n  -> " + $0 } ?? "") }
}
