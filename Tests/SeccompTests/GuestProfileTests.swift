#if canImport(Glibc)
import Glibc
#endif
import CSeccomp
import CSys
import Testing
import TetherPosix
@testable import TetherSeccomp

/// The guest profiles as data and as loaded filters: `default` (every guest command unless it
/// asks otherwise) and `restricted`.
@Suite struct GuestProfileTests {
    @Test func defaultPolicyCompilesAndEveryRuleIsKnownOnThisArchitecture() throws {
        let filter = try SeccompFilter(.defaultGuest)
        #expect(Set(filter.absentSyscalls).isSubset(of: ["umount", "nfsservctl"]), "\(filter.absentSyscalls)")
        let bpf = try filter.exportBPF()
        #expect(bpf.count > 0 && bpf.count % 8 == 0)
        // The kernel takes at most 4096 instructions per filter.
        #expect(bpf.count / 8 <= 4096)
    }

    @Test func restrictedHasEveryRuleOfDefaultAndMore() {
        let restricted = Set(SeccompPolicy.restrictedGuest.rules)
        #expect(Set(SeccompPolicy.defaultGuest.rules).isSubset(of: restricted))
        for name in ["ptrace", "process_vm_readv", "process_vm_writev", "chroot"] {
            #expect(SeccompPolicy.restrictedGuest.syscalls(withAction: .errno(EPERM)).contains(name))
            #expect(!SeccompPolicy.defaultGuest.syscalls(withAction: .errno(EPERM)).contains(name))
        }
    }

    /// The 32 rules that stand for "personality only with 0, 8, 0x20000, 0x20008 or
    /// 0xffffffff" (see `personalityRules`) against that sentence itself.
    @Test func personalityRulesRefuseExactlyTheUnusualPersonas() {
        let allowed: Set<UInt64> = [0, 8, 0x20000, 0x20008, 0xffff_ffff]
        func expected(_ persona: UInt64) -> Bool { !allowed.contains(persona & 0xffff_ffff) }
        var samples: [UInt64] = Array(allowed) + [0x0040_0000, 0x0004_0000, 1, 0x7fff_ffff, 0xffff_fffe, 0x1_0000_0000]
        for bit in 0..<32 {
            samples.append(1 << UInt64(bit))
            samples.append(0xffff_ffff & ~(1 << UInt64(bit)))
            samples.append(0x20008 | 1 << UInt64(bit))
            for other in 0..<32 { samples.append(1 << UInt64(bit) | 1 << UInt64(other)) }
        }
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 { samples.append(UInt64.random(in: 0...UInt64.max, using: &generator)) }
        for persona in samples {
            #expect(SeccompPolicy.personalityRefused(persona) == expected(persona), "persona \(String(persona, radix: 16))")
        }
    }

    @Test func defaultRefusesTheDenyListAndLeavesOrdinaryWork() async {
        await #expect(processExitsWith: .exitCode(0)) {
            do { try SeccompFilter(.defaultGuest).load() } catch { exit(90) }
            func call(_ name: String, _ a: Int = 0, _ b: Int = 0, _ c: Int = 0) -> (Int, CInt) {
                errno = 0
                let result = csys_raw_syscall(Int(seccomp_syscall_resolve_name(name)), a, b, c, 0, 0, 0)
                return (result, errno)
            }
            // EPERM, not EBADF/EFAULT/EINVAL: the filter answered, not the kernel.
            if call("open_by_handle_at", -1, 0, 0) != (-1, EPERM) { exit(1) }
            if call("keyctl", 0, -3) != (-1, EPERM) { exit(2) }
            if call("bpf", 0, 0, 0) != (-1, EPERM) { exit(3) }
            if call("io_uring_setup", 1, 0) != (-1, EPERM) { exit(4) }
            if call("setns", -1, 0) != (-1, EPERM) { exit(5) }
            for flag in CloneFlags.namespaces + [CloneFlags.newTime] {
                if call("unshare", Int(flag)) != (-1, EPERM) { exit(6) }
            }
            if call("clone", Int(CloneFlags.newNet) | Int(SIGCHLD)) != (-1, EPERM) { exit(7) }
            if call("clone3") != (-1, ENOSYS) { exit(8) }
            if call("personality", 0x0040_0000 /* READ_IMPLIES_EXEC */) != (-1, EPERM) { exit(9) }
            if call("personality", 0xffff_ffff).0 < 0 { exit(10) }
            if call("mount", 0, 0, 0) != (-1, EPERM) { exit(11) }
            // Left to the kernel: ptrace (EPERM/ESRCH of its own), chroot, reading the clock.
            if call("ptrace", 16 /* PTRACE_ATTACH */, -1) == (-1, EPERM) { exit(12) }
            if call("chroot", 0) != (-1, EFAULT) { exit(13) }
            // unshare without a namespace flag (CLONE_FILES) is fine.
            if call("unshare", 0x400).0 != 0 { exit(14) }
            var fds: [CInt] = [0, 0]
            if pipe(&fds) != 0 || write(fds[1], "x", 1) != 1 { exit(15) }
            exit(0)
        }
    }
}
