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
    private let collected = NSCondition()
    private var stdoutBytes = Data()
    private var stderrBytes = Data()
    private var openStreams = 2
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
        for (pipe, isStdout) in [(stdoutPipe, true), (stderrPipe, false)] {
            pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
                let data = handle.availableData
                guard let self else { return }
                collected.lock()
                if data.isEmpty {
                    handle.readabilityHandler = nil
                    openStreams -= 1
                } else if isStdout {
                    stdoutBytes.append(data)
                } else {
                    stderrBytes.append(data)
                }
                collected.broadcast()
                collected.unlock()
            }
        }
        let exited = self.exited
        process.terminationHandler = { _ in exited.signal() }
        try process.run()
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

    public var stdout: String {
        collected.lock()
        defer { collected.unlock() }
        return String(decoding: stdoutBytes, as: UTF8.self)
    }

    public var stderr: String {
        collected.lock()
        defer { collected.unlock() }
        return String(decoding: stderrBytes, as: UTF8.self)
    }

    /// Waits until stdout (or, with `onStandardError`, stderr) contains `text` (or the
    /// deadline passes); true if it does.
    public func waitForOutput(_ text: String, onStandardError: Bool = false, timeout: TimeInterval = 30) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        collected.lock()
        defer { collected.unlock() }
        while !String(decoding: onStandardError ? stderrBytes : stdoutBytes, as: UTF8.self).contains(text) {
            if !collected.wait(until: deadline) { return false }
        }
        return true
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
        collected.lock()
        while openStreams > 0 && collected.wait(until: deadline) {}
        collected.unlock()
        return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    }
}
