import Foundation
import Synchronization
import TetherPosix

// What the CLI's stdin threads (StdinPump, TerminalInput) share: they block in read(2) on
// their own thread, and hand each chunk to the async client from there.

/// One read(2) of this process's stdin into `buffer`: the byte count, or 0 at its end (EOF,
/// an error, or a nonblocking stdin with nothing there, which a blocking reader cannot wait on).
func readStandardInput(into buffer: inout [UInt8]) -> Int {
    let result = buffer.withUnsafeMutableBytes { raw in Result { () throws(Errno) in try FileIO.read(0, into: raw) } }
    if case .success(.bytes(let n)) = result { return n }
    return 0
}

/// Runs async work and blocks this (dedicated, non-Task) thread until it is done.
func blockingWait(_ body: @escaping @Sendable () async -> Bool) -> Bool {
    let semaphore = DispatchSemaphore(value: 0)
    let result = Mutex(false)
    Task.detached {
        let value = await body()
        result.withLock { $0 = value }
        semaphore.signal()
    }
    semaphore.wait()
    return result.withLock { $0 }
}
