#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// Why an exec never started, as its `failed` event says it: the failure kind, the errno, the
/// stage where it happened and a sentence for people. Stages are `SpawnStage` (defined once in
/// the protocol); the C child reports its stage as a `csys_spawn_stage` number, turned into a
/// `SpawnStage` here and nowhere else.
struct SpawnFailure: Error, Equatable {
    var kind: SpawnFailureKind
    var errno: CInt
    var stage: SpawnStage
    var message: String

    /// The one place that turns a failed stage and its errno into a failure kind: the stage
    /// decides where it names the cause (user, pty, cwd, limits, request checks), the errno
    /// decides for everything else (exec, fork, pipes, stdio, ...).
    static func classify(stage: SpawnStage, errno code: Errno) -> SpawnFailureKind {
        switch stage {
        case .argv, .env, .cwd, .rlimits: return .badArgs
        // EINVAL: not a user spec at all; otherwise the user or group is missing from the guest's
        // files, which the failure's message names.
        case .user: return code == .invalid ? .badArgs : .userSetupFailed
        case .setgroups, .setgid, .setuid: return .userSetupFailed
        case .chdir: return .badCwd
        case .setrlimit: return .resourceLimit
        // The confinement could not be applied: never a property of the program or its path.
        case .capabilityBound, .capabilitySets, .noNewPrivs, .seccomp: return .other
        case .openpt, .unlockpt, .openSlave, .winsize, .ptyNonblock, .controllingTty: return .ptySetupFailed
        case .stdin, .pipes, .reportPipe, .fork, .signals, .setsid, .stdio, .closeFds, .exec, .unrecognized: break
        }
        switch code {
        case .noEntry, .notDirectory: return .notFound
        case .accessDenied, .notPermitted: return .permissionDenied
        case .execFormat, .isDirectory: return .notExecutable
        case .argumentListTooLong, .nameTooLong: return .badArgs
        case .tooManyOpenFiles, .fileTableOverflow, .again: return .resourceLimit
        case .noMemory: return .outOfMemory
        default: return .other
        }
    }

    init(stage: SpawnStage, errno code: CInt, message: String) {
        self.kind = Self.classify(stage: stage, errno: Errno(rawValue: code))
        self.errno = code
        self.stage = stage
        self.message = message
    }

    /// A failed step of the spawn itself: the message names the step, the path and the errno.
    init(stage: SpawnStage, errno code: CInt, program: String) {
        let what: String
        switch stage {
        case .exec: what = "cannot execute \(program)"
        case .chdir: what = "cannot change to the working directory"
        case .fork: what = "cannot fork"
        default: what = "\(stage) failed"
        }
        self.init(stage: stage, errno: code, message: "\(what): \(Errno(rawValue: code))")
    }

    var event: Failed { Failed(kind: kind, errno: errno, stage: stage, message: message) }
}

extension SpawnStage {
    /// The stage a `csys_spawn_stage` number names (from `csys_spawn` or the child's report).
    init(child stage: CInt) {
        switch UInt32(bitPattern: stage) {
        case CSYS_STAGE_REPORT_PIPE.rawValue: self = .reportPipe
        case CSYS_STAGE_FORK.rawValue: self = .fork
        case CSYS_STAGE_SIGNALS.rawValue: self = .signals
        case CSYS_STAGE_SETSID.rawValue: self = .setsid
        case CSYS_STAGE_CONTROLLING_TTY.rawValue: self = .controllingTty
        case CSYS_STAGE_STDIO.rawValue: self = .stdio
        case CSYS_STAGE_SETRLIMIT.rawValue: self = .setrlimit
        case CSYS_STAGE_CAPABILITY_BOUND.rawValue: self = .capabilityBound
        case CSYS_STAGE_CAPABILITY_SETS.rawValue: self = .capabilitySets
        case CSYS_STAGE_SETGROUPS.rawValue: self = .setgroups
        case CSYS_STAGE_SETGID.rawValue: self = .setgid
        case CSYS_STAGE_SETUID.rawValue: self = .setuid
        case CSYS_STAGE_CHDIR.rawValue: self = .chdir
        case CSYS_STAGE_CLOSE_FDS.rawValue: self = .closeFds
        case CSYS_STAGE_NO_NEW_PRIVS.rawValue: self = .noNewPrivs
        case CSYS_STAGE_SECCOMP.rawValue: self = .seccomp
        case CSYS_STAGE_EXEC.rawValue: self = .exec
        default: self = .unrecognized("unknown")
        }
    }

    /// The stage a `csys_pty_stage` number names (from `csys_openpty`).
    init(pty stage: CInt) {
        switch UInt32(bitPattern: stage) {
        case CSYS_PTY_STAGE_OPEN.rawValue: self = .openpt
        case CSYS_PTY_STAGE_UNLOCK.rawValue: self = .unlockpt
        case CSYS_PTY_STAGE_OPEN_SLAVE.rawValue: self = .openSlave
        case CSYS_PTY_STAGE_WINSIZE.rawValue: self = .winsize
        default: self = .ptyNonblock
        }
    }
}
