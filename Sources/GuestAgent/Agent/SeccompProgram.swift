#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherProtocol
import TetherSeccomp

/// The `restricted` profile as a classic-BPF program, compiled with libseccomp once when the
/// agent starts and kept at a fixed address for its whole life: every restricted child gets a
/// pointer to it (csys_spawn_options.seccomp_filter) and installs it between fork and execve,
/// where libseccomp must not run (it allocates, and the child of a threaded parent may not).
final class SeccompProgram {
    private let instructions: UnsafeMutableBufferPointer<sock_filter>
    private let program: UnsafeMutablePointer<sock_fprog>

    /// What a child is handed.
    var pointer: UnsafePointer<sock_fprog> { UnsafePointer(program) }
    var instructionCount: Int { instructions.count }

    /// `bpf` is libseccomp's export: `struct sock_filter` records, 8 bytes each, host order.
    init?(bpf: [UInt8]) {
        let size = MemoryLayout<sock_filter>.stride
        guard size == 8, !bpf.isEmpty, bpf.count % size == 0, bpf.count / size <= Int(UInt16.max) else { return nil }
        let buffer = UnsafeMutableBufferPointer<sock_filter>.allocate(capacity: bpf.count / size)
        bpf.withUnsafeBytes { raw in
            _ = UnsafeMutableRawBufferPointer(buffer).initializeMemory(as: UInt8.self, from: raw)
        }
        let fprog = UnsafeMutablePointer<sock_fprog>.allocate(capacity: 1)
        fprog.initialize(to: sock_fprog(len: UInt16(buffer.count), filter: buffer.baseAddress))
        instructions = buffer
        program = fprog
    }

    deinit {
        program.deallocate()
        instructions.deallocate()
    }

    /// The restricted program, or why it cannot be had: then every restricted exec fails
    /// with that failure (never runs unconfined).
    static func restricted() -> Result<SeccompProgram, SpawnFailure> {
        do {
            let filter = try SeccompFilter(.restrictedGuest)
            let bpf = try filter.exportBPF()
            guard let program = SeccompProgram(bpf: bpf) else {
                return .failure(SpawnFailure(stage: "seccomp", errno: EINVAL,
                                             message: "libseccomp exported \(bpf.count) bytes, not a BPF program"))
            }
            return .success(program)
        } catch {
            var code = EINVAL
            if case .libseccomp(_, let e) = error { code = e.rawValue }
            return .failure(SpawnFailure(stage: "seccomp", errno: code,
                                         message: "cannot build the restricted seccomp filter: \(error)"))
        }
    }
}
