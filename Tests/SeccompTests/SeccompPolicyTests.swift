#if canImport(Glibc)
import Glibc
#endif
import CSeccomp
import CSys
import Testing
import TetherPosix
@testable import TetherSeccomp

@Suite struct SeccompPolicyTests {
    @Test func restrictedPolicyCompilesAndEveryRuleIsKnownOnThisArchitecture() throws {
        let filter = try SeccompFilter(.restrictedGuest)
        // Calls x86_64 does not have at all; every other name must resolve, or a typo would
        // silently leave a hole.
        #expect(Set(filter.absentSyscalls).isSubset(of: ["umount", "nfsservctl"]), "\(filter.absentSyscalls)")
        let bpf = try filter.exportBPF()
        #expect(bpf.count > 0 && bpf.count % 8 == 0, "a BPF program is an array of 8-byte instructions")
    }

    @Test func relayPolicyCompilesAndEveryRuleIsKnownOnThisArchitecture() throws {
        let filter = try SeccompFilter(.relay)
        #expect(Set(filter.absentSyscalls).isSubset(of: ["umount", "nfsservctl"]), "\(filter.absentSyscalls)")
        #expect(SeccompPolicy.relay.syscalls(withAction: .trap).contains("execve"))
    }

    @Test func theSameRulesCoverThe32BitABIs() throws {
        let native = try SeccompFilter(.restrictedGuest).exportBPF()
        var nativeOnly = SeccompPolicy.restrictedGuest
        nativeOnly.coverCompatibilityABIs = false
        let smaller = try SeccompFilter(nativeOnly).exportBPF()
        #expect(native.count > smaller.count, "i386 and x32 sections add instructions")
    }

    @Test func restrictedBlocksPrivilegedCallsWithEPERMAndLeavesTheRest() async {
        await #expect(processExitsWith: .exitCode(0)) {
            do { try SeccompFilter(.restrictedGuest).load() } catch { exit(90) }
            // mount(2): EPERM, not EFAULT or ENOENT: the filter answered, not the kernel.
            errno = 0
            if mount("none", "/mnt", "tmpfs", 0, nil) != -1 || errno != EPERM { exit(1) }
            func call(_ name: String, _ a: Int = 0, _ b: Int = 0) -> (Int, CInt) {
                let result = csys_raw_syscall(Int(seccomp_syscall_resolve_name(name)), a, b, 0, 0, 0, 0)
                return (result, errno)
            }
            if call("unshare", 0x1000_0000 /* CLONE_NEWUSER */) != (-1, EPERM) { exit(2) }
            if call("ptrace", 16 /* PTRACE_ATTACH */, Int(getppid())) != (-1, EPERM) { exit(3) }
            if call("bpf") != (-1, EPERM) { exit(4) }
            if call("clone3") != (-1, ENOSYS) { exit(5) }
            // setns to a user namespace: refused (default refuses every setns).
            if call("setns", -1, 0x1000_0000) != (-1, EPERM) { exit(9) }
            // Ordinary work still works: files, pipes, time, identity.
            var fds: [CInt] = [0, 0]
            if pipe(&fds) != 0 || write(fds[1], "x", 1) != 1 { exit(6) }
            if open("/proc/self/status", O_RDONLY) < 0 { exit(7) }
            if getpid() <= 0 { exit(8) }
            exit(0)
        }
    }

    @Test func theRelayPolicyFailsUnlistedCallsWithEPERM() async {
        await #expect(processExitsWith: .exitCode(0)) {
            do { try SeccompFilter(.relay).load() } catch { exit(90) }
            // Raw packets and netlink stay out; TCP is in for the listeners of exposed ports.
            if socket(AF_PACKET, CInt(SOCK_RAW.rawValue), 0) != -1 || errno != EPERM { exit(1) }
            if socket(AF_NETLINK, CInt(SOCK_RAW.rawValue), 0) != -1 || errno != EPERM { exit(5) }
            if socket(AF_INET, CInt(SOCK_STREAM.rawValue), 0) < 0 { exit(6) }
            let unixSocket = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
            if unixSocket < 0 { exit(2) }
            if kill(getpid(), 0) != -1 || errno != EPERM { exit(3) }
            if chdir("/") != -1 || errno != EPERM { exit(4) }
            exit(0)
        }
    }

    @Test func anExecveInTheConfinedRelayDiesOfSIGSYSAndSaysWhy() async {
        let result = await #expect(processExitsWith: .signal(SIGSYS), observing: [\.standardErrorContent]) {
            do {
                let filter = try SeccompFilter(.relay)
                try filter.reportTraps(prefix: "tether relay")
                try filter.load()
            } catch { exit(90) }
            let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
            execv("/bin/true", argv)
            exit(91)  // only reached if execve returned
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("tether relay: seccomp blocked forbidden syscall execve (59); terminating"), "\(stderr)")
    }
}
