#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherProtocol
import TetherSeccomp

/// A guest seccomp profile (`default` or `restricted`) as a classic-BPF program, compiled with
/// libseccomp once by the agent and kept at a fixed address for its whole life: every child
/// under that profile gets a pointer to it (csys_spawn_options.seccomp_filter) and installs it
/// between fork and execve, where libseccomp must not run (it allocates, and the child of a
/// threaded parent may not).
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

    /// The program of `policy`, or why it cannot be had: then every exec under that profile
    /// fails with that failure (never runs unconfined).
    static func compile(_ policy: SeccompPolicy) -> Result<SeccompProgram, SpawnFailure> {
        do {
            let filter = try SeccompFilter(policy)
            let bpf = try filter.exportBPF()
            guard let program = SeccompProgram(bpf: bpf) else {
                return .failure(SpawnFailure(stage: .seccomp, errno: EINVAL,
                                             message: "libseccomp exported \(bpf.count) bytes, not a BPF program"))
            }
            return .success(program)
        } catch {
            var code = EINVAL
            if case .libseccomp(_, let e) = error { code = e.rawValue }
            return .failure(SpawnFailure(stage: .seccomp, errno: code,
                                         message: "cannot build the \(policy.name) seccomp filter: \(error)"))
        }
    }
}

/// The agent's compiled guest profiles, one program each for its whole life. Used on the
/// agent's loop thread only.
final class GuestSeccompPrograms {
    private var programs: [SeccompProfile: Result<SeccompProgram, SpawnFailure>] = [:]

    /// Compiles `default` at once: nearly every exec uses it.
    init() { _ = program(for: .default) }

    /// The program for `profile`, compiled on first use; nil for `none` (no filter).
    func program(for profile: SeccompProfile) -> Result<SeccompProgram, SpawnFailure>? {
        let policy: SeccompPolicy
        switch profile {
        case .unfiltered: return nil
        case .default: policy = .defaultGuest
        case .restricted: policy = .restrictedGuest
        }
        if let compiled = programs[profile] { return compiled }
        let compiled = SeccompProgram.compile(policy)
        programs[profile] = compiled
        return compiled
    }
}
