#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import Synchronization
import TetherClient
import TetherProtocol

/// A pty session in the foreground (`tether shell`, `exec -t`, `attach` of a tty session):
/// local stdin goes to the remote pty byte for byte, its output to local stdout, SIGWINCH
/// becomes `resize`, and the detach keys leave the session running.
///
/// When local stdin is a terminal it is put in raw mode for the session and restored on every
/// way out: the session's end, an error, the detach keys, and SIGINT/SIGTERM/SIGHUP to the
/// CLI (then `SignalWatcher` restores it before the CLI dies of the signal, and the relay
/// kills the session when the connection goes).
enum InteractiveSession {
    /// `endInputOnEOF`: EOF on local stdin is EOF for the program (the pty's EOF character).
    /// `attach` passes false: re-attaching from a script with no input must not end a shell
    /// someone else started.
    static func run(_ handle: ExecHandle, detachKeys: DetachKeys, endInputOnEOF: Bool = true) async throws(TetherError) -> Int32 {
        let raw = LocalTerminal.isTerminal(0) && LocalTerminal.enterRawMode(0)
        defer { LocalTerminal.restore() }
        if raw {
            // Ctrl-C is a byte for the remote terminal now; a signal from elsewhere ends us.
            SignalWatcher.shared.setHandler(nil)
        } else {
            SignalWatcher.shared.setHandler { signal in handle.signal(signal) }
        }
        SignalWatcher.shared.setResizeHandler {
            let size = LocalTerminal.currentSize
            handle.resize(rows: size.rows, cols: size.cols)
        }
        defer {
            SignalWatcher.shared.setHandler(nil)
            SignalWatcher.shared.setResizeHandler(nil)
        }
        // The session may have been started (or last attached) at another size.
        let size = LocalTerminal.currentSize
        handle.resize(rows: size.rows, cols: size.cols)

        let detach = DetachRequest()
        let finished = Atomic<Bool>(false)
        defer { finished.store(true, ordering: .relaxed) }
        if let writer = handle.takeStdin() {
            TerminalInput.start(writer, keys: detachKeys, endInputOnEOF: endInputOnEOF,
                                finished: { finished.load(ordering: .relaxed) }) { detach.request(handle) }
        }
        let status = try await OutputPump().copyOutput(of: handle)
        if let task = detach.task {
            let number: UInt32
            do { number = try await task.value } catch {
                throw (error as? TetherError) ?? TetherError(.internal, "\(error)", operation: "detach")
            }
            LocalTerminal.restore()
            writeStandardError("\r\ntether: detached from session \(number); `tether attach \(number)` comes back\n")
            return 0
        }
        guard let status else {
            writeStandardError(ErrorBlock.render(message: "\(handle.session.map { "session \($0)" } ?? "exec"): the session ended without an exit status", hint: nil))
            return CLIExit.tetherFailed
        }
        return CLIExit.status(status)
    }
}

/// The detach keys were typed: one `detach` request, whose answer `run` waits for.
final class DetachRequest: Sendable {
    private let slot = Mutex<Task<UInt32, Error>?>(nil)

    var task: Task<UInt32, Error>? { slot.withLock { $0 } }

    func request(_ handle: ExecHandle) {
        slot.withLock { slot in
            guard slot == nil else { return }
            slot = Task { () async throws -> UInt32 in try await handle.detach() }
        }
    }
}

/// Copies local stdin to the session on a dedicated thread (read(2) blocks), watching for the
/// detach keys; EOF on stdin is EOF for the session (the agent types the pty's EOF character).
enum TerminalInput {
    /// `finished`: the session is over; stop reading, so what is typed next stays in the
    /// terminal for the local shell instead of going to a session that has ended.
    static func start(_ writer: StdinWriter, keys: DetachKeys, endInputOnEOF: Bool, finished: @escaping @Sendable () -> Bool,
                      onDetach: @escaping @Sendable () -> Void) {
        let thread = Thread {
            var matcher = DetachMatcher(keys)
            var buffer = [UInt8](repeating: 0, count: 16 << 10)
            while true {
                // Read only what is there already (poll first), checking for the end between.
                var ready = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
                let polled = poll(&ready, 1, 100)
                if finished() { return }
                if polled == 0 || (polled < 0 && errno == EINTR) { continue }
                let n = readStandardInput(into: &buffer)
                if n <= 0 { break }
                let (forward, detach) = matcher.feed(buffer[0..<n])
                if !forward.isEmpty {
                    let delivered = blockingWait { (try? await writer.write(forward)) != nil }
                    if !delivered { return }
                }
                if detach {
                    onDetach()
                    return
                }
            }
            if endInputOnEOF { try? writer.close() }
        }
        thread.name = "tether-stdin"
        thread.start()
    }
}
