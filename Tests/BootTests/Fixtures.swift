#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import Synchronization
import TestSupport
import TetherBoot
import Testing

/// What the boot tests need from the machine: root, the static agent, guest trees (built once
/// by the repository's own scripts and cached by them), a C compiler for the stub libkrun.
enum Fixtures {
    static let repository = Binaries.repositoryRoot

    /// Namespaces, mounts and pivot_root need root; a test that lacks it is cancelled, not passed.
    static func requireRoot() throws {
        if geteuid() != 0 { try Test.cancel("needs root (namespaces, mounts, pivot_root); this test process is uid \(geteuid())") }
    }

    /// The static agent: $TETHER_AGENT_STATIC (scripts/test.sh sets it), else what
    /// scripts/build-agent.sh left in .build-static.
    static func staticAgent() throws -> String {
        if let path = ProcessInfo.processInfo.environment["TETHER_AGENT_STATIC"], !path.isEmpty { return path }
        let built = repository.appendingPathComponent(".build-static/tether-agent").path
        if FileManager.default.isExecutableFile(atPath: built) { return built }
        try Test.cancel("no static agent: run scripts/test.sh, or scripts/build-agent.sh and set TETHER_AGENT_STATIC")
    }

    /// The default busybox tree from rootfs/build.sh (cached by the script; built once per agent),
    /// asked for once per test process.
    static func busyboxRootfs() throws -> String {
        try memoized("busybox") { try script(["rootfs/build.sh", "--agent", try staticAgent()]) }
    }

    /// A Debian tree with systemd or OpenRC from rootfs/debootstrap.sh (cached; about a minute to build).
    static func debianRootfs(_ flavor: String) throws -> String {
        try memoized("debian-" + flavor) { try script(["rootfs/debootstrap.sh", "--agent", try staticAgent(), flavor]) }
    }

    private static let cache = Mutex<[String: String]>([:])
    /// Runs `make` once per key per process (tests run in parallel: the scripts' own locks keep
    /// a tree from being built twice; this only saves re-running them).
    private static func memoized(_ key: String, _ make: () throws -> String) throws -> String {
        if let value = cache.withLock({ $0[key] }) { return value }
        let value = try make()
        cache.withLock { $0[key] = value }
        return value
    }

    /// The busybox tree without the agent: a copy made once per test process.
    static func rootfsWithoutAgent() throws -> String {
        let source = try busyboxRootfs()
        let copy = temporaryDirectory("noagent").appendingPathComponent("rootfs").path
        let result = try run(["/bin/cp", "-a", source, copy])
        guard result.status == 0 else { throw FixtureError.failed("cp -a \(source) \(copy): \(result.stderr)") }
        try FileManager.default.removeItem(atPath: copy + "/sbin/tether-agent")
        return copy
    }

    /// Runs a repository script that prints a path on its last stdout line.
    static func script(_ argv: [String]) throws -> String {
        // In the repository (the scripts' paths are relative to it).
        let result = try run(["/bin/bash", "-c", #"cd "$0" && exec /bin/bash "$@""#, repository.path] + argv)
        guard result.status == 0, let path = result.stdout.split(separator: "\n").last.map(String.init) else {
            throw FixtureError.failed("\(argv.joined(separator: " ")) exited \(result.status): \(result.stderr.suffix(2000))")
        }
        return path
    }

    /// A fresh directory under /tmp with a short path (unix socket paths hold 107 bytes).
    static func temporaryDirectory(_ label: String) -> URL {
        var template = Array("/tmp/tb-\(label)-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        return URL(fileURLWithPath: path, isDirectory: true)
    }

    /// Whether a process still runs: not gone and not a zombie waiting for its (re)parent to
    /// reap it (a detached supervisor is reaped by init, some time after it exited).
    static func isRunning(_ pid: Int32?) -> Bool {
        guard let pid, pid > 0, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(close, offsetBy: 2)]
        return state != "Z" && state != "X"
    }

    /// A CLOEXEC pipe as raw descriptors (the caller closes both).
    static func pipe() -> (read: CInt, write: CInt) {
        var fds: [CInt] = [-1, -1]
        precondition(Glibc.pipe(&fds) == 0)
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (fds[0], fds[1])
    }

    /// Reads a descriptor to EOF.
    static func readAll(_ fd: CInt) -> String {
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            output += buffer[0..<n]
        }
        return String(decoding: output, as: UTF8.self)
    }

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs a program to completion and collects its output.
    static func run(_ argv: [String], environment: [String: String]? = nil) throws -> Output {
        let process = try ChildProcess(argv, environment: environment)
        guard let status = process.wait(timeout: 600) else { throw FixtureError.failed("\(argv[0]) did not finish in 10 minutes") }
        return Output(status: status, stdout: process.stdout, stderr: process.stderr)
    }

    /// `tether ARGS` as a user runs it, with its state under `home`: the static agent for the
    /// default rootfs (unless `staticAgent` is false), nothing of the test's own TETHER_SOCKET
    /// or TETHER_ERRORS, `extra` on top; stdin from the file `standardInput` if given.
    static func tether(_ arguments: [String], home: URL, standardInput: String? = nil,
                       extra: [String: String] = [:], staticAgent: Bool = true) throws -> Output {
        var environment = ProcessInfo.processInfo.environment
        environment["TETHER_HOME"] = home.path
        if staticAgent { environment["TETHER_AGENT_STATIC"] = try Self.staticAgent() }
        environment.removeValue(forKey: "TETHER_SOCKET")
        environment.removeValue(forKey: "TETHER_ERRORS")
        for (key, value) in extra { environment[key] = value }
        let argv = [Binaries.product("tether").path] + arguments
        if let standardInput { return try run(argv, environment: environment, standardInput: standardInput) }
        return try run(argv, environment: environment)
    }

    /// The sandboxes under `home`, as the tests' own `tether` commands see them.
    static func sandboxes(home: URL) -> Sandboxes {
        Sandboxes(home: TetherHome(root: home), supervisorExecutable: Binaries.product("tether-sandbox").path)
    }

    /// Runs a program to completion with its stdin read from the file at `path` (the shell's
    /// `<`: ChildProcess writes text only, and probes are binaries).
    static func run(_ argv: [String], environment: [String: String]? = nil, standardInput path: String) throws -> Output {
        try run(["/bin/sh", "-c", #"exec "$@" < "$0""#, path] + argv, environment: environment)
    }

    /// A private copy of the busybox tree (cp -a), for a test that writes into it or must not
    /// let a failure write into the shared cached one; `owner` chowns the whole copy to that
    /// uid and gid.
    static func rootfsCopy(_ label: String, owner: uid_t? = nil) throws -> String {
        let source = try busyboxRootfs()
        let copy = temporaryDirectory(label).appendingPathComponent("rootfs").path
        let result = try run(["/bin/cp", "-a", source, copy])
        guard result.status == 0 else { throw FixtureError.failed("cp -a \(source) \(copy): \(result.stderr)") }
        if let owner {
            let chown = try run(["/bin/chown", "-R", "\(owner):\(owner)", copy])
            guard chown.status == 0 else { throw FixtureError.failed("chown -R \(owner) \(copy): \(chown.stderr)") }
        }
        return copy
    }

    /// Tests/BootTests/Probes/NAME.c compiled with `cc -static -O` (once per test process), a
    /// program that runs in any guest tree: what an attacker would copy into a sandbox.
    static func staticProbe(_ name: String) throws -> String {
        try memoized("probe-" + name) {
            let source = repository.appendingPathComponent("Tests/BootTests/Probes/\(name).c").path
            let output = temporaryDirectory("probe").appendingPathComponent(name).path
            let compiler = try cCompiler()
            let result = try run([compiler, "-static", "-O", "-o", output, source])
            if result.status != 0 {
                try Test.cancel("cannot build the static probe \(name) (\(compiler) -static needs libc6-dev's libc.a): \(result.stderr.suffix(500))")
            }
            return output
        }
    }

    /// A C compiler for the stub libkrun: cc, else the Swift toolchain's clang.
    static func cCompiler() throws -> String {
        for candidate in ["/usr/bin/cc", "/usr/bin/gcc", "/opt/swift/usr/bin/clang", "/usr/bin/clang"]
        where FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        try Test.cancel("no C compiler (cc, gcc or clang) to build the stub libkrun")
    }
}

enum FixtureError: Error, CustomStringConvertible {
    case failed(String)
    var description: String { if case .failed(let text) = self { return text }; return "" }
}
