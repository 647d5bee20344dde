#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix
import TetherProtocol

/// Where the agent's shutdown stands.
struct ShutdownState {
    /// `shutdown`, SIGTERM or the end of the only stream: nothing new starts.
    var requested = false
    /// The grace is over or nothing was left: waiting for the last frames to go out.
    var finalizing = false
    /// `.initChild`: the init was asked to power off; its SIGTERM now means exit at once.
    var powerOffRequested = false
    var graceTimer: TimerID?
}

/// Shutdown: no new sessions; SIGTERM to every session's process group; after the grace
/// SIGKILL; the last frames flushed; then exit or power off (see `Role`).
extension Agent {
    /// `shutdown{graceMs}`, SIGTERM or SIGINT, or the end of the only stream. The default
    /// grace is 5 s.
    func shutdown(graceMs: UInt64?, reason: String) {
        guard !shutdownState.requested else { return }
        shutdownState.requested = true
        exec.refusesNew = true
        files.refusesNew = true
        let grace = graceMs ?? Self.defaultShutdownGraceMs
        Log.info("shutting down (\(reason)), grace \(grace) ms")
        endpoint.close()
        exec.signalAll(SIGTERM)
        shutdownState.graceTimer = loop.schedule(after: .milliseconds(Int64(clamping: grace))) { [unowned self] in graceOver() }
        checkShutdownProgress()
    }

    /// SIGTERM or SIGINT to the agent itself.
    func terminationRequested(by signal: CInt) {
        if shutdownState.powerOffRequested {
            // The init's own end of shutdown (systemd-shutdown, busybox init) TERMs every
            // process left and waits for them before it powers off: go.
            Log.info("the init is powering off; exiting")
            finalAction = .exit(0)
            loop.stopping = true
        } else if shutdownState.requested {
            // Asked again: no more grace.
            graceOver()
        } else {
            shutdown(graceMs: nil, reason: signal == SIGTERM ? "SIGTERM" : "SIGINT")
        }
    }

    private func graceOver() {
        if let timer = shutdownState.graceTimer { loop.cancel(timer) }
        shutdownState.graceTimer = nil
        guard !shutdownState.finalizing else { return }
        exec.signalAll(SIGKILL)
        killOrphans()
        finalize()
    }

    /// Every session's leader exited and its output ended: nothing more to wait for.
    func checkShutdownProgress() {
        guard shutdownState.requested, !shutdownState.finalizing else { return }
        guard exec.allComplete else { return }
        if let timer = shutdownState.graceTimer { loop.cancel(timer) }
        shutdownState.graceTimer = nil
        killOrphans()
        finalize()
    }

    /// SIGKILL to processes the agent inherited that belong to no session: everything but
    /// itself as PID 1, its remaining children as a subreaper.
    private func killOrphans() {
        switch role {
        case .machineInit, .namespaceInit:
            _ = kill(-1, SIGKILL)
        case .subreaper, .initChild:
            for pid in Self.childrenOfSelf() { _ = kill(pid, SIGKILL) }
        }
    }

    /// Processes whose parent is the agent, from /proc.
    static func childrenOfSelf() -> [pid_t] {
        let me = getpid()
        guard let dir = opendir("/proc") else { return [] }
        defer { closedir(dir) }
        var result: [pid_t] = []
        while let entry = readdir(dir) {
            // The name in place, up to its NUL: readdir's records are only as long as their
            // name, so copying the whole 256-byte d_name field reads past the last one (ASan
            // caught it in the agent fuzz target).
            let name = withUnsafeMutablePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 1) { String(cString: $0) }
            }
            guard let pid = pid_t(name), pid != me,
                  let stat = try? FileIO.readFile("/proc/\(pid)/stat", limit: 1024) else { continue }
            // Fields after the last ')' (the name may hold spaces and parentheses): state ppid ...
            guard let close = stat.lastIndex(of: UInt8(ascii: ")")) else { continue }
            let fields = stat[(close + 1)...].split(separator: UInt8(ascii: " "))
            if fields.count > 1, let ppid = pid_t(String(decoding: fields[1], as: UTF8.self)), ppid == me {
                result.append(pid)
            }
        }
        return result
    }

    /// Waits (in the loop) for the last frames to reach the host, then stops the loop.
    private func finalize() {
        guard !shutdownState.finalizing else { return }
        shutdownState.finalizing = true
        let deadline = EventLoop.now() + Self.finalFlushTimeout.nanoseconds
        func check() {
            if (!exec.anyRunning && pendingBytes == 0) || EventLoop.now() >= deadline {
                stop()
            } else {
                loop.schedule(after: .milliseconds(10)) { check() }
            }
        }
        check()
    }

    private func stop() {
        switch role {
        case .machineInit:
            finalAction = .powerOff
            loop.stopping = true
        case .namespaceInit, .subreaper:
            finalAction = .exit(0)
            loop.stopping = true
        case .initChild(let initSystem):
            // The init takes it from here and ends this process with everything else; the
            // agent keeps answering (refusing new sessions) until its SIGTERM.
            shutdownState.powerOffRequested = true
            Log.info(initSystem.requestPowerOff())
        }
    }
}
