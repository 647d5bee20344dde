#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization
import TetherClient
import TetherPosix

/// Writes the session's output to local stdout and stderr on one dedicated thread (a full
/// pipe or a slow terminal blocks that thread, never a Task). `write` waits while more than
/// `limit` bytes are queued, so a slow local reader slows the remote program through the
/// window instead of filling memory.
///
/// Owns: its thread (ends with `finish()`). Writes to fds 1 and 2, which it does not own.
final class OutputPump: Sendable {
    struct State {
        var queue: [(fd: Int32, bytes: [UInt8])] = []
        var queuedBytes = 0
        var finished = false
        var brokenPipe = false
        var spaceWaiters: [CheckedContinuation<Void, Never>] = []
        var drainedWaiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())
    /// Woken once per queued write; the thread drains everything per wake.
    private let wakeup: WakeGate
    private let limit: Int

    init(limit: Int = 1 << 20) throws(TetherError) {
        self.limit = limit
        do { wakeup = try WakeGate() } catch {
            throw TetherError(.internal, "cannot set up the output thread: \(error)", operation: "output", errno: error.rawValue)
        }
        DedicatedThread.start(named: "tether-output") { [self] in run() }
    }

    /// Local stdout or stderr is a closed pipe (`tether exec ... | head`).
    var brokenPipe: Bool { state.withLock { $0.brokenPipe } }

    func write(_ bytes: [UInt8], to fd: Int32) async {
        guard !bytes.isEmpty else { return }
        let full = state.withLock { state -> Bool in
            state.queue.append((fd, bytes))
            state.queuedBytes += bytes.count
            return state.queuedBytes > limit
        }
        wakeup.wake()
        if full {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let room = state.withLock { state -> Bool in
                    if state.queuedBytes <= limit || state.brokenPipe { return true }
                    state.spaceWaiters.append(continuation)
                    return false
                }
                if room { continuation.resume() }
            }
        }
    }

    /// Waits until everything queued was written (or could not be).
    func drain() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if state.queue.isEmpty && state.queuedBytes == 0 { return true }
                state.drainedWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    private func run() {
        while true {
            wakeup.sleep()
            if state.withLock({ $0.queue.isEmpty }) { continue }
            let batch = state.withLock { state -> [(fd: Int32, bytes: [UInt8])] in
                defer { state.queue.removeAll() }
                return state.queue
            }
            var written = 0
            for item in batch {
                if !state.withLock({ $0.brokenPipe }) {
                    do { try FileIO.writeAll(item.fd, item.bytes) } catch {
                        state.withLock { $0.brokenPipe = true }
                    }
                }
                written += item.bytes.count
            }
            let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.queuedBytes -= written
                var waiters: [CheckedContinuation<Void, Never>] = []
                if state.queuedBytes <= limit || state.brokenPipe {
                    waiters += state.spaceWaiters
                    state.spaceWaiters = []
                }
                if state.queuedBytes == 0 {
                    waiters += state.drainedWaiters
                    state.drainedWaiters = []
                }
                return waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }
}

extension OutputPump {
    /// Copies a session's stdout and stderr to fds 1 and 2 until the session ends, then waits
    /// until all of it is written; returns how the program ended (nil: no `exited`). `afterEach`
    /// runs after every event. The one loop from session events to local output.
    /// `stdoutTo`: where the session's stdout goes (2 for `exec --detach`, whose own stdout
    /// holds only the session number).
    func copyOutput(of handle: ExecHandle, stdoutTo stdoutFD: Int32 = 1, afterEach: () -> Void = {}) async throws(TetherError) -> ExitStatus? {
        var status: ExitStatus?
        do {
            for try await event in handle.events {
                switch event {
                case .stdout(let bytes): await write(bytes, to: stdoutFD)
                case .stderr(let bytes): await write(bytes, to: 2)
                case .exited(let exit): status = exit
                case .stdinError(_, let message):
                    // Not an error of the command (it may well exit 0): what was typed or piped
                    // after this point did not reach it. Said in order with its output.
                    await write(Array(ErrorBlock.render(message: "warning: stdin: \(message); what followed was not delivered",
                                                        hint: nil).utf8), to: 2)   // in order with the output, so not ErrorBlock.warning
                case .started: break
                }
                afterEach()
            }
        } catch {
            await drain()
            throw error
        }
        await drain()
        return status
    }
}
