#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// What every exec starts from: the user database, the limits a child gets before its
/// request's own, and the seccomp programs; turns one `exec` request into a forked child.
///
/// Holds no descriptor; lives on the agent's loop thread.
final class ExecSpawner {
    let users = UserDatabase()
    /// Limits every child starts with before its request's own: the agent raised its
    /// descriptor limit for itself, programs get the usual one back.
    let baseLimits: [csys_rlimit]
    /// The profile of requests that name none (`--seccomp`).
    let defaultProfile: SeccompProfile
    /// The guest seccomp programs, each built once, not per exec (libseccomp compiles a policy
    /// in some hundred microseconds, and must not run in a fork child); shared by every child
    /// under that profile. `default` at start (nearly every exec uses it), `restricted` on
    /// first use.
    let seccompPrograms = GuestSeccompPrograms()
    /// Whether an exec that asks for no filter leaves a warning on the console (the agent's
    /// always does; `DirectSpawn`, which measures, turns it off).
    var warnsOfUnfilteredExecs = true

    init(baseLimits: [csys_rlimit], defaultProfile: SeccompProfile) {
        self.baseLimits = baseLimits
        self.defaultProfile = defaultProfile
        if case .failure(let failure) = seccompPrograms.program(for: .default) {
            Log.warning("\(failure.message); execs under the default profile will fail")
        }
        if defaultProfile == .unfiltered {
            Log.warning("--seccomp none: commands run without a seccomp filter unless their request names a profile")
        }
    }

    /// Plans and forks; the exec's own outcome arrives later on the child's report pipe.
    func start(_ request: ExecRequest) -> Result<(child: StartedChild, program: String), SpawnFailure> {
        do throws(SpawnFailure) {
            let plan = try SpawnPlan(request: request, users: users, baseLimits: baseLimits)
            if request.seccomp == .unfiltered && warnsOfUnfilteredExecs {
                Log.warning("exec \(plan.program): seccomp none requested: the command runs without a filter")
            }
            let filter = try seccompPrograms.program(for: request.seccomp ?? defaultProfile)?.get()
            let child = try withExtendedLifetime(filter) { () throws(SpawnFailure) -> StartedChild in
                try ChildSpawner.start(plan, request: request, seccompFilter: filter?.pointer)
            }
            return .success((child, plan.program))
        } catch {
            return .failure(error)
        }
    }
}
