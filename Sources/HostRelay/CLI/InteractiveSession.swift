#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import Synchronization
import TetherClient
import TetherPosix
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
        var input: StdinForwarder?
        if let writer = handle.takeStdin() {
            do throws(Errno) {
                input = try StdinForwarder(writer, keys: detachKeys, closeOnEOF: endInputOnEOF) { detach.request(handle) }
            } catch {
                throw TetherError(.internal, "cannot forward stdin: \(error)", operation: "exec", errno: error.rawValue)
            }
        }
        // When the session is over, what is typed next stays in the terminal for the local shell.
        defer { input?.stop() }
        let status = try await OutputPump().copyOutput(of: handle)
        if let task = detach.task {
            let number: UInt32
            do { number = try await task.value } catch {
                throw (error as? TetherError) ?? TetherError(.internal, "\(error)", operation: "detach")
            }
            LocalTerminal.restore()
            writeStandardError("\r\n")
            ErrorBlock.note("detached from session \(number); `tether attach \(number)` comes back")
            return 0
        }
        guard let status else {
            ErrorBlock.report(TetherError(.protocolError, "the session ended without an exit status",
                                          operation: handle.session.map { "session \($0)" } ?? "exec"), operation: "exec")
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
