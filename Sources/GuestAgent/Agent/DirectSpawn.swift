#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// Runs programs the way the agent's `exec` starts them (the same `ExecSpawner`: the plan, the
/// pipes, the capability bound, no_new_privs, the profile's seccomp filter, the vfork child)
/// and waits for each on the calling thread, with no event loop, protocol or transport around
/// it. `tether-bench` times it beside posix_spawn and beside a real exec, so that each part of
/// an exec's round trip (what confinement costs, what the agent's loop and protocol cost, what
/// the relay hop costs) is measured apart in every run.
public final class DirectSpawn {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    private let spawner: ExecSpawner

    public init() {
        spawner = ExecSpawner(baseLimits: [], defaultProfile: .default)
        spawner.warnsOfUnfilteredExecs = false
    }

    /// Starts `argv` under `seccomp` (stdin /dev/null; stdout and stderr pipes, read to their
    /// end and dropped), reaps it, and returns its wait status. A failed start throws, with the
    /// stage and errno the agent would report.
    public func run(_ argv: [String], seccomp: SeccompProfile = .default) throws(Failure) -> CInt {
        let request = ExecRequest(argv: argv.map { OSString($0) }, seccomp: seccomp)
        let child: StartedChild
        switch spawner.start(request) {
        case .success(let started): child = started.child
        case .failure(let failure): throw Failure(description: failure.message)
        }
        defer {
            child.report.close()
            child.stdout.close()
            child.stderr?.close()
        }
        var open = [child.stdout.raw] + (child.stderr.map { [$0.raw] } ?? [])
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while !open.isEmpty {
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if poll(&fds, nfds_t(fds.count), -1) < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "poll: \(Errno.current)")
            }
            for entry in fds where entry.revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(entry.fd, $0.baseAddress, $0.count) }
                if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) { open.removeAll { $0 == entry.fd } }
            }
        }
        var status: CInt = 0
        while waitpid(child.pid, &status, 0) < 0 {
            guard errno == EINTR else { throw Failure(description: "waitpid: \(Errno.current)") }
        }
        // The child is gone, so its end of the report pipe is closed: the pipe holds the failed
        // stage, or nothing (the exec happened).
        var report = csys_spawn_report()
        if csys_spawn_read_report(child.report.raw, &report) == 1 {
            throw Failure(description: "\(argv.first ?? ""): \(SpawnStage(child: report.stage)) failed: \(Errno(rawValue: report.error))")
        }
        return status
    }
}
