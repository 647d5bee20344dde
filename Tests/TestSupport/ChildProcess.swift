#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherPosix

/// A program run by a test: posix_spawn(3), stdout and stderr read to EOF by one thread each
/// with plain read(2), optionally a stdin pipe. SIGKILLed (and reaped) if still running when
/// the value goes away, so a failing test leaves nothing behind.
///
/// Not Foundation's Process: its `readDataToEndOfFile` traps on EINTR (`try!` inside
/// FileHandle), and a run of the suite crashed on it and on an EBADF read from it; its
/// readabilityHandler teardown has crashed runs in libdispatch too. Every descriptor here is
/// created close-on-exec (pipe2), so a spawn in another test's thread cannot inherit one and
/// hold a pipe open.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    private var stdinFD: CInt = -1
    /// A wait gave up (and killed the program): later waits say nil too.
    private var timedOut = false

    /// What the reader threads fill. Its own object, so the threads do not keep the
    /// ChildProcess alive: dropping it must still kill the program (which ends the threads).
    private final class Captured: @unchecked Sendable {
        let condition = NSCondition()
        var output: [[UInt8]] = [[], []]
        var openStreams = 2
        /// The exit status (128+N for signal N) once the reaper thread has it.
        var exitStatus: Int32?
    }
    private let captured = Captured()
    private var condition: NSCondition { captured.condition }
    private var output: [[UInt8]] { captured.output }
    private var exitStatus: Int32? { condition.lock(); defer { condition.unlock() }; return captured.exitStatus }

    /// Starts `argv[0]` (a path) with `argv`. `environment`: the whole environment (default:
    /// this process's). `stdin`: a pipe for `writeStdin`/`closeStdin` instead of /dev/null.
    public init(_ argv: [String], environment: [String: String]? = nil, stdin: Bool = false) throws {
        func cloexecPipe() throws -> [CInt] {
            let pipe = try TetherPosix.Pipe()   // pipe2(O_CLOEXEC)
            return [pipe.readEnd.release(), pipe.writeEnd.release()]
        }
        let outPipe = try cloexecPipe()
        let errPipe: [CInt], inPipe: [CInt]
        do { errPipe = try cloexecPipe() } catch { outPipe.forEach { close($0) }; throw error }
        do { inPipe = try cloexecPipe() } catch { (outPipe + errPipe).forEach { close($0) }; throw error }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if stdin {
            posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Default dispositions and an empty mask: the test runner's (blocked SIGPIPE, handlers)
        // are not the program's.
        var all = sigset_t(), none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        let env = environment ?? ProcessInfo.processInfo.environment
        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cArgv.forEach { free($0) }; cEnv.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, argv[0], &actions, &attributes, cArgv, cEnv)
        close(outPipe[1]); close(errPipe[1]); close(inPipe[0])
        guard result == 0 else {
            close(outPipe[0]); close(errPipe[0]); close(inPipe[1])
            throw ClientError("posix_spawn \(argv[0]): \(String(cString: strerror(result)))")
        }
        self.pid = pid
        if stdin { stdinFD = inPipe[1] } else { close(inPipe[1]) }
        // Each thread holds its descriptor and `captured`, never `self`; it ends at EOF.
        for (index, fd) in [outPipe[0], errPipe[0]].enumerated() {
            Thread { [captured] in
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    if n < 0 && errno == EINTR { continue }
                    captured.condition.lock()
                    if n > 0 { captured.output[index] += buffer[0..<n] } else { captured.openStreams -= 1 }
                    captured.condition.broadcast()
                    captured.condition.unlock()
                    if n <= 0 { break }
                }
                close(fd)
            }.start()
        }
        // Reaped the moment it exits, by a thread blocked in waitpid for this pid only: a zombie
        // left for later would let Swift Testing's exit-test monitor (waitid P_ALL, WNOWAIT)
        // spin on it, and keeps the status at risk of a pid reused by the time anyone waits.
        let child = pid
        Thread { [captured] in
            var raw: CInt = 0
            while waitpid(child, &raw, 0) < 0 && errno == EINTR {}
            let exited = raw & 0x7f == 0
            captured.condition.lock()
            captured.exitStatus = exited ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
            captured.condition.broadcast()
            captured.condition.unlock()
        }.start()
    }

    /// `executable` with `arguments` (argv[0] is the executable).
    public convenience init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                            stdin: Bool = false) throws {
        try self.init([executable] + arguments, environment: environment, stdin: stdin)
    }

    deinit {
        if exitStatus == nil {
            kill(pid, SIGKILL)
            _ = wait(timeout: 10)
        }
        if stdinFD >= 0 { close(stdinFD) }
    }

    /// Not exited yet.
    public var isRunning: Bool { exitStatus == nil }

    public var stdout: String { String(decoding: stdoutBytes, as: UTF8.self) }
    public var stderr: String { condition.lock(); defer { condition.unlock() }; return String(decoding: output[1], as: UTF8.self) }
    public var stdoutBytes: [UInt8] { condition.lock(); defer { condition.unlock() }; return output[0] }

    public func writeStdin(_ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(stdinFD, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 { if errno == EINTR { continue }; return }
            offset += n
        }
    }

    public func closeStdin() {
        if stdinFD >= 0 { close(stdinFD) }
        stdinFD = -1
    }

    public func signal(_ number: Int32) { kill(pid, number) }

    /// Waits until stdout (or, with `onStandardError`, stderr) contains `text`; false after
    /// `timeout`.
    public func waitForOutput(_ text: String, onStandardError: Bool = false, timeout: TimeInterval = 30) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while !String(decoding: output[onStandardError ? 1 : 0], as: UTF8.self).contains(text) {
            if !condition.wait(until: deadline) { return false }
        }
        return true
    }

    /// The exit status (128+N for signal N) once it exited and both streams reached EOF;
    /// nil (and the process SIGKILLed) after `timeout`.
    @discardableResult
    public func wait(timeout: TimeInterval = 60) -> Int32? {
        if timedOut { return nil }
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        while captured.exitStatus == nil && condition.wait(until: deadline) {}
        if captured.exitStatus == nil {
            condition.unlock()
            kill(pid, SIGKILL)
            timedOut = true
            condition.lock()
            while captured.exitStatus == nil { condition.wait() }
            condition.unlock()
            return nil
        }
        while captured.openStreams > 0 && condition.wait(until: deadline) {}
        let value = captured.exitStatus
        condition.unlock()
        return value
    }
}

/// Runs a command to completion: its exit status (128+N for a signal) and what it printed on
/// stdout and stderr together (for setup steps).
@discardableResult
public func runCommand(_ argv: [String], timeout: TimeInterval = 300) throws -> (status: Int32, output: String) {
    let process = try ChildProcess(argv)
    guard let status = process.wait(timeout: timeout) else {
        throw ClientError("\(argv.joined(separator: " ")) did not finish within \(Int(timeout)) s")
    }
    return (status, process.stdout + process.stderr)
}
