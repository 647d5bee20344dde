#if canImport(Glibc)
import Glibc
#endif
import Testing
import TestSupport
import TetherProtocol
import TetherAgent

/// `DirectSpawn` (what tether-bench times as "the agent's spawn in-process") starts programs
/// as the agent's exec does: confined, with the profile's filter, and reaped.
@Suite struct DirectSpawnTests {
    let spawner = DirectSpawn()

    func exitCode(_ status: CInt) -> CInt { (status >> 8) & 0xff }

    @Test func runsAProgramToItsEndAndGivesItsStatus() throws {
        #expect(try spawner.run(["/bin/true"]) == 0)
        let status = try spawner.run(["/bin/sh", "-c", "exit 7"])
        #expect(status & 0x7f == 0)
        #expect(exitCode(status) == 7)
    }

    @Test func theDefaultProfileFiltersAndNoneDoesNot() throws {
        // /proc/self/status says "Seccomp: 2" under a filter, 0 without.
        let check = ["/bin/sh", "-c", "grep -q '^Seccomp:[[:space:]]*2' /proc/self/status"]
        #expect(exitCode(try spawner.run(check, seccomp: .default)) == 0)
        #expect(exitCode(try spawner.run(check, seccomp: .unfiltered)) == 1)
        // And the filter is the guest's: a new user namespace is refused.
        let unshare = ["/usr/bin/unshare", "-U", "/bin/true"]
        if access(unshare[0], X_OK) == 0 {
            #expect(exitCode(try spawner.run(unshare, seccomp: .default)) != 0)
        }
    }

    @Test func theCapabilityBoundHolds() throws {
        // CAP_SYS_ADMIN (21) is outside the guest's bound even for root.
        let check = ["/bin/sh", "-c", "b=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status); [ $(( 0x$b >> 21 & 1 )) = 0 ]"]
        #expect(exitCode(try spawner.run(check)) == 0)
    }

    @Test func outputLargerThanThePipesIsDrained() throws {
        // 4 MiB to stdout and to stderr, far more than the pipes hold: a spawner that did not
        // read both to their end would never see the program end.
        let status = try spawner.run(["/bin/sh", "-c", "head -c 4194304 /dev/zero; head -c 4194304 /dev/zero >&2"])
        #expect(status == 0)
    }

    @Test func aMissingProgramIsATypedFailure() {
        #expect {
            try spawner.run(["/nonexistent/program"])
        } throws: { error in
            "\(error)".contains("ENOENT") || "\(error)".contains("No such file")
        }
    }
}
