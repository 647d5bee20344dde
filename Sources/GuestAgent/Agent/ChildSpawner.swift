#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// The agent's ends of a child that was forked: its pid, the report pipe that says whether
/// the exec happened, and the descriptors the session reads and writes (all nonblocking,
/// CLOEXEC). The child's ends were closed in the agent before this is returned; whoever holds
/// this owns every descriptor in it.
struct StartedChild {
    var pid: pid_t
    var report: SharedFD
    /// The write end of the child's stdin pipe, or the pty master; nil for stdin "none".
    var stdin: SharedFD?
    /// The read end of stdout, or the pty master (the same object as `stdin`).
    var stdout: SharedFD
    /// The read end of stderr; nil on a pty (the terminal carries both).
    var stderr: SharedFD?
    var isTerminal: Bool
}

/// Starts children through csys_spawn. Used on the agent's loop thread only.
enum ChildSpawner {
    /// Pipes the agent reads are enlarged to the output window, so a program can write one
    /// window's worth before it blocks (best effort: the kernel caps it at pipe-max-size).
    static let outputPipeBytes = CInt(FlowControl.initialWindowBytes)

    /// Opens the descriptors, forks and returns at once: the exec's outcome arrives later on
    /// `report` (see csys_spawn.h). Throws for failures before and at fork.
    /// Every child is confined the same way whatever its profile: at most
    /// `GuestCapabilities.guestDefault` in its bounding set, no ambient capabilities,
    /// no_new_privs. `seccompFilter` (nil for the profile `none`) is passed to the child
    /// unchanged (see csys_spawn_options).
    static func start(_ plan: SpawnPlan, request: ExecRequest,
                      seccompFilter: UnsafePointer<sock_fprog>? = nil) throws(SpawnFailure) -> StartedChild {
        // The child's ends: closed in the agent once the child has its copies, whatever
        // happens. The agent's ends close on their own if this throws (SharedFD).
        var childEnds: [SharedFD] = []
        defer { for fd in childEnds { fd.close() } }
        func pipe(_ what: String, agentEndNonBlocking: (read: Bool, write: Bool)) throws(SpawnFailure) -> (read: SharedFD, write: SharedFD) {
            do {
                let pipe = try Pipe()
                if agentEndNonBlocking.read { try pipe.readEnd.setNonBlocking() }
                if agentEndNonBlocking.write { try pipe.writeEnd.setNonBlocking() }
                return (SharedFD(pipe.readEnd), SharedFD(pipe.writeEnd))
            } catch {
                throw SpawnFailure(stage: .pipes, errno: error.rawValue, message: "cannot set up the \(what) pipe: \(error)")
            }
        }

        var stdio: (CInt, CInt, CInt)
        var controllingTty: CInt = -1
        var stdinEnd: SharedFD?
        let stdoutEnd: SharedFD
        var stderrEnd: SharedFD?
        if let size = request.tty {
            let pty = try PtyPair.open(rows: size.rows, columns: size.cols)
            let master = SharedFD(OwnedFD(adopting: pty.master))
            let slave = SharedFD(OwnedFD(adopting: pty.slave))
            childEnds.append(slave)
            // Like login(1): the terminal belongs to the user who runs on it.
            if let user = plan.user { _ = fchown(slave.raw, user.uid, user.gid) }
            stdio = (slave.raw, slave.raw, slave.raw)
            controllingTty = slave.raw
            stdinEnd = master
            stdoutEnd = master
        } else {
            let childStdin: SharedFD
            switch request.stdin {
            case .none:
                let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
                if fd < 0 {
                    let error = Errno.current
                    throw SpawnFailure(stage: .stdin, errno: error.rawValue, message: "cannot open /dev/null for stdin: \(error)")
                }
                childStdin = SharedFD(OwnedFD(adopting: fd))
            case .pipe:
                let p = try pipe("stdin", agentEndNonBlocking: (read: false, write: true))
                childStdin = p.read
                stdinEnd = p.write
            }
            childEnds.append(childStdin)
            let out = try pipe("stdout", agentEndNonBlocking: (read: true, write: false))
            childEnds.append(out.write)
            let err = try pipe("stderr", agentEndNonBlocking: (read: true, write: false))
            childEnds.append(err.write)
            _ = csys_set_pipe_size(out.read.raw, outputPipeBytes)
            _ = csys_set_pipe_size(err.read.raw, outputPipeBytes)
            stdio = (childStdin.raw, out.write.raw, err.write.raw)
            stdoutEnd = out.read
            stderrEnd = err.read
        }

        let paths = CStringArray(plan.candidates)
        let argv = CStringArray(plan.argv)
        let envp = CStringArray(plan.environment)
        let groups = plan.user?.groups ?? []
        let cwd: [CChar]? = plan.cwd.map { $0.map { CChar(bitPattern: $0) } + [0] }

        var reportFD: CInt = -1
        var failedStage: CInt = 0
        // The arrays must outlive the call: ARC may free an object right after its last use.
        let pid: pid_t = withExtendedLifetime((paths, argv, envp)) { groups.withUnsafeBufferPointer { groupBuffer in
            plan.rlimits.withUnsafeBufferPointer { limitBuffer in
                withOptionalCString(cwd) { cwdPointer in
                    var options = csys_spawn_options()
                    options.paths = paths.constPointers
                    options.path_count = CInt(paths.count)
                    options.argv = UnsafePointer(argv.pointers)
                    options.envp = UnsafePointer(envp.pointers)
                    options.stdio = stdio
                    options.controlling_tty = controllingTty
                    options.cwd = cwdPointer
                    if let user = plan.user {
                        options.set_user = 1
                        options.uid = user.uid
                        options.gid = user.gid
                        options.groups = groupBuffer.baseAddress
                        options.group_count = CInt(groupBuffer.count)
                    }
                    options.rlimits = limitBuffer.baseAddress
                    options.rlimit_count = CInt(limitBuffer.count)
                    options.bound_capabilities = 1
                    options.kept_capabilities = GuestCapabilities.guestDefault
                    options.no_new_privs = 1
                    options.seccomp_filter = seccompFilter
                    return csys_spawn(&options, &reportFD, &failedStage)
                }
            }
        } }
        guard pid > 0 else {
            throw SpawnFailure(stage: SpawnStage(child: failedStage), errno: -pid, program: plan.program)
        }
        return StartedChild(pid: pid, report: SharedFD(OwnedFD(adopting: reportFD)), stdin: stdinEnd, stdout: stdoutEnd,
                            stderr: stderrEnd, isTerminal: request.tty != nil)
    }

    private static func withOptionalCString<R>(_ bytes: [CChar]?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
        guard let bytes else { return body(nil) }
        return bytes.withUnsafeBufferPointer { body($0.baseAddress) }
    }
}
