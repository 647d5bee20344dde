#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

/// A program run by a test, with its output captured. Killed (SIGKILL) if still running when
/// the value goes away, so a failing test leaves nothing behind.
public final class ChildProcess: @unchecked Sendable {
    public let process = Process()
    private let stdoutPipe = Pipe()
    private let stderrPipe = Pipe()
    private let stdinPipe: Pipe?
    private let output = CollectedOutput()
    private let exited = DispatchSemaphore(value: 0)

    /// Starts `executable` with `arguments`. `stdin`: give it a pipe (`writeStdin`,
    /// `closeStdin`) instead of /dev/null.
    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: Bool = false) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        process.standardOutput = stdoutPipe
        process.standardError = stderrPipe
        if stdin {
            let pipe = Pipe()
            stdinPipe = pipe
            process.standardInput = pipe
        } else {
            stdinPipe = nil
            process.standardInput = FileHandle.nullDevice
        }
        let exited = self.exited
        process.terminationHandler = { _ in exited.signal() }
        try process.run()
        // Plain blocking reads on a thread per stream, not `readabilityHandler`: tearing down
        // FileHandle's dispatch read source races the descriptor's close in corelibs
        // Foundation and has crashed whole test runs in `_dispatch_event_loop_drain`
        // (swift-corelibs-foundation PR 5507). Each thread holds its Pipe, so the descriptor
        // stays open until the thread has seen EOF; none holds `self`, so dropping the value
        // still kills the process.
        for (pipe, isStdout) in [(stdoutPipe, true), (stderrPipe, false)] {
            Thread { [output] in
                let fd = pipe.fileHandleForReading.fileDescriptor
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    if n < 0 && errno == EINTR { continue }
                    output.add(n > 0 ? Array(buffer[0..<n]) : nil, stdout: isStdout)
                    if n <= 0 { break }
                }
            }.start()
        }
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    public var pid: Int32 { process.processIdentifier }

    public func writeStdin(_ text: String) throws {
        try stdinPipe?.fileHandleForWriting.write(contentsOf: Data(text.utf8))
    }

    public func closeStdin() throws { try stdinPipe?.fileHandleForWriting.close() }

    public func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    public var stdout: String { output.text(stdout: true) }
    public var stderr: String { output.text(stdout: false) }

    /// Waits until stdout (or, with `onStandardError`, stderr) contains `text` (or the
    /// deadline passes); true if it does.
    public func waitForOutput(_ text: String, onStandardError: Bool = false, timeout: TimeInterval = 30) -> Bool {
        output.wait(until: Date(timeIntervalSinceNow: timeout)) {
            String(decoding: onStandardError ? $0.stderr : $0.stdout, as: UTF8.self).contains(text)
        }
    }

    /// Waits for the exit and for both output streams to close; the exit status, 128+N for a
    /// signal. Kills the process and returns nil after `timeout`.
    public func wait(timeout: TimeInterval = 60) -> Int32? {
        let deadline = Date(timeIntervalSinceNow: timeout)
        if exited.wait(timeout: .now() + timeout) == .timedOut {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        exited.signal()  // a second wait() returns at once
        _ = output.wait(until: deadline) { $0.openStreams == 0 }
        return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    }
}

/// What a child's two output streams said so far, filled by the reader threads.
private final class CollectedOutput: @unchecked Sendable {
    private let condition = NSCondition()
    private(set) var stdout: [UInt8] = []
    private(set) var stderr: [UInt8] = []
    private(set) var openStreams = 2

    /// Bytes read from a stream, or nil at its end.
    func add(_ bytes: [UInt8]?, stdout isStdout: Bool) {
        condition.lock()
        if let bytes {
            if isStdout { stdout += bytes } else { stderr += bytes }
        } else {
            openStreams -= 1
        }
        condition.broadcast()
        condition.unlock()
    }

    func text(stdout isStdout: Bool) -> String {
        condition.lock()
        defer { condition.unlock() }
        return String(decoding: isStdout ? stdout : stderr, as: UTF8.self)
    }

    /// Waits until `done` holds (checked under the lock); false at the deadline.
    func wait(until deadline: Date, _ done: (CollectedOutput) -> Bool) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while !done(self) {
            if !condition.wait(until: deadline) { return done(self) }
        }
        return true
    }
}
