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
        var childEnds: [CInt] = []      // closed in the agent whatever happens
        var agentEnds: [CInt] = []      // closed only if the spawn fails
        var succeeded = false
        defer {
            for fd in childEnds { _ = Glibc.close(fd) }
            if !succeeded { for fd in agentEnds { _ = Glibc.close(fd) } }
        }
        func pipe(_ what: String) throws(SpawnFailure) -> (read: CInt, write: CInt) {
            var fds: [CInt] = [-1, -1]
            let result = csys_pipe2(&fds, O_CLOEXEC)
            guard result == 0 else {
                throw SpawnFailure(stage: "pipes", errno: -result, message: "cannot create the \(what) pipe: \(Errno(rawValue: -result))")
            }
            return (fds[0], fds[1])
        }
        func nonBlocking(_ fd: CInt) throws(SpawnFailure) {
            do { try FileIO.setNonBlocking(fd) } catch {
                throw SpawnFailure(stage: "pipes", errno: error.rawValue, message: "cannot make a pipe nonblocking: \(error)")
            }
        }

        var stdio: (CInt, CInt, CInt)
        var controllingTty: CInt = -1
        var stdinEnd: CInt?
        var stdoutEnd: CInt = -1
        var stderrEnd: CInt?
        if let size = request.tty {
            let pty = try PtyPair.open(rows: size.rows, columns: size.cols)
            agentEnds.append(pty.master)
            childEnds.append(pty.slave)
            // Like login(1): the terminal belongs to the user who runs on it.
            if let user = plan.user { _ = fchown(pty.slave, user.uid, user.gid) }
            stdio = (pty.slave, pty.slave, pty.slave)
            controllingTty = pty.slave
            stdinEnd = pty.master
            stdoutEnd = pty.master
        } else {
            var childStdin: CInt
            switch request.stdin {
            case .none:
                childStdin = open("/dev/null", O_RDONLY | O_CLOEXEC)
                if childStdin < 0 {
                    let error = Errno.current
                    throw SpawnFailure(stage: "stdin", errno: error.rawValue, message: "cannot open /dev/null for stdin: \(error)")
                }
                childEnds.append(childStdin)
            case .pipe:
                let p = try pipe("stdin")
                childEnds.append(p.read)
                agentEnds.append(p.write)
                try nonBlocking(p.write)
                childStdin = p.read
                stdinEnd = p.write
            }
            let out = try pipe("stdout")
            childEnds.append(out.write)
            agentEnds.append(out.read)
            let err = try pipe("stderr")
            childEnds.append(err.write)
            agentEnds.append(err.read)
            try nonBlocking(out.read)
            try nonBlocking(err.read)
            _ = csys_set_pipe_size(out.read, outputPipeBytes)
            _ = csys_set_pipe_size(err.read, outputPipeBytes)
            stdio = (childStdin, out.write, err.write)
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
            let stage = String(cString: csys_spawn_stage_name(failedStage))
            throw SpawnFailure(stage: stage, errno: -pid, program: plan.program)
        }
        succeeded = true
        let stdout = SharedFD(OwnedFD(adopting: stdoutEnd))
        let stdin = stdinEnd.map { $0 == stdoutEnd ? stdout : SharedFD(OwnedFD(adopting: $0)) }
        return StartedChild(pid: pid, report: SharedFD(OwnedFD(adopting: reportFD)), stdin: stdin, stdout: stdout,
                            stderr: stderrEnd.map { SharedFD(OwnedFD(adopting: $0)) }, isTerminal: request.tty != nil)
    }

    private static func withOptionalCString<R>(_ bytes: [CChar]?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
        guard let bytes else { return body(nil) }
        return bytes.withUnsafeBufferPointer { body($0.baseAddress) }
    }
}
