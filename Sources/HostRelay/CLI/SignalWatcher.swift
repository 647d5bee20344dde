#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization
import TetherPosix

/// SIGINT, SIGTERM, SIGHUP and SIGWINCH for the whole CLI: blocked in every thread (so
/// `install()` runs first in main, before any thread exists) and taken by one thread with
/// sigwait(3).
///
/// With no handler set, SIGINT, SIGTERM and SIGHUP end the CLI the usual way (the local
/// terminal's settings are put back first, then the signal is re-raised with the default
/// action, so the shell sees "killed by signal"). `tether exec` sets a handler that forwards
/// the signal to the remote process group; `tether relay` one that stops the relay.
/// SIGWINCH goes to its own handler (an interactive session's resize) or is ignored.
///
/// Owns: the sigwait thread, for the life of the process.
final class SignalWatcher: Sendable {
    static let shared = SignalWatcher()
    static let watched: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGWINCH]

    private let handler = Mutex<(@Sendable (Int32) -> Void)?>(nil)
    private let resizeHandler = Mutex<(@Sendable () -> Void)?>(nil)

    static func install() {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in watched { sigaddset(&set, signal) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let watcher = shared
        DedicatedThread.start(named: "tether-signals") {
            var set = sigset_t()
            sigemptyset(&set)
            for signal in watched { sigaddset(&set, signal) }
            while true {
                var received: Int32 = 0
                guard sigwait(&set, &received) == 0 else { continue }
                watcher.deliver(received)
            }
        }
    }

    func setHandler(_ body: (@Sendable (Int32) -> Void)?) { handler.withLock { $0 = body } }

    /// What to do when the local terminal's window changes size.
    func setResizeHandler(_ body: (@Sendable () -> Void)?) { resizeHandler.withLock { $0 = body } }

    private func deliver(_ signal: Int32) {
        if signal == SIGWINCH {
            resizeHandler.withLock { $0 }?()
            return
        }
        if let body = handler.withLock({ $0 }) {
            body(signal)
            return
        }
        // Die of the signal: default action, unblocked in this thread, sent to the process.
        // A terminal left in raw mode would be unusable for the shell that gets it back.
        LocalTerminal.restore()
        Glibc.signal(signal, SIG_DFL)
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, signal)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        kill(getpid(), signal)
        _exit(128 + signal)
    }
}
