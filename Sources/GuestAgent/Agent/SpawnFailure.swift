#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// Why an exec never started, as its `failed` event says it: the failure kind (DESIGN.md
/// "Exec"), the errno, the stage where it happened and a sentence for people.
///
/// Stages before fork are checks and set-up in the agent (`argv`, `env`, `cwd`, `user`,
/// `rlimits`, `stdin`, `pipes`, `openpt`, `unlockpt`, `openSlave`, `winsize`, `ptyNonblock`);
/// `reportPipe` and `fork` happen in the parent; the rest run in the child, named by
/// `csys_spawn_stage_name` (`signals`, `setsid`, `controllingTty`, `stdio`, `setrlimit`,
/// `capabilityBound`, `capabilitySets`, `setgroups`, `setgid`, `setuid`, `chdir`, `closeFds`,
/// `noNewPrivs`, `seccomp`, `exec`).
struct SpawnFailure: Error, Equatable {
    var kind: SpawnFailureKind
    var errno: CInt
    var stage: String
    var message: String

    /// The one place that turns a failed stage and its errno into a failure kind: the stage
    /// decides where it names the cause (user, pty, cwd, limits, request checks), the errno
    /// decides for everything else (exec, fork, pipes, stdio, ...).
    static func classify(stage: String, errno code: CInt) -> SpawnFailureKind {
        switch stage {
        case "argv", "env", "cwd", "rlimits": return .badArgs
        case "user": return code == EINVAL ? .badArgs : .userNotFound   // EINVAL: not a user spec at all
        case "setgroups", "setgid", "setuid": return .userSetupFailed
        case "chdir": return .badCwd
        case "setrlimit": return .resourceLimit
        // The confinement could not be applied: never a property of the program or its path.
        case "capabilityBound", "capabilitySets", "noNewPrivs", "seccomp": return .other
        case "openpt", "unlockpt", "openSlave", "winsize", "ptyNonblock", "controllingTty": return .ptySetupFailed
        default: break
        }
        switch code {
        case ENOENT, ENOTDIR: return .notFound
        case EACCES, EPERM: return .permissionDenied
        case ENOEXEC, EISDIR: return .notExecutable
        case E2BIG, ENAMETOOLONG: return .badArgs
        case EMFILE, ENFILE, EAGAIN: return .resourceLimit
        case ENOMEM: return .outOfMemory
        default: return .other
        }
    }

    init(stage: String, errno code: CInt, message: String) {
        self.kind = Self.classify(stage: stage, errno: code)
        self.errno = code
        self.stage = stage
        self.message = message
    }

    /// A failed step of the spawn itself: the message names the step, the path and the errno.
    init(stage: String, errno code: CInt, program: String) {
        let error = Errno(rawValue: code)
        let what: String
        switch stage {
        case "exec": what = "cannot execute \(program)"
        case "chdir": what = "cannot change to the working directory"
        case "fork": what = "cannot fork"
        default: what = "\(stage) failed"
        }
        self.init(stage: stage, errno: code, message: "\(what): \(error)")
    }

    var event: Failed { Failed(kind: kind, errno: errno, stage: stage, message: message) }
}
