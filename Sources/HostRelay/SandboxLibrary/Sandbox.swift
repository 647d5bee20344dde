@_exported import TetherBoot
@_exported import TetherClient
import Foundation
import TetherPosix
import TetherProtocol

/// A running sandbox and a client of its relay: what a Swift program boots, runs commands in
/// and stops, as `tether boot`, `tether exec --sandbox` and `tether stop` do.
///
///     try await withSandbox(SandboxOptions(name: "dev")) { sandbox in
///         let output = try await sandbox.shell("uname -a")
///         print(output.stdoutText)
///     }   // stopped here, whether the body returned or threw
///
/// Booting and stopping throw `SandboxError` (`nameConflict` with the running one's pid,
/// `bootFailed` with the stage, errno, message and hint of `boot-error.json`, ...); running
/// commands throws `TetherError`, as `TetherClient` does.
public final class Sandbox: Sendable {
    /// What the supervisor recorded once the agent said hello (pids, sockets, timings).
    public let state: SandboxState
    /// The client of the sandbox's relay; every command below goes through it.
    public let client: TetherClient
    private let sandboxes: Sandboxes
    /// A sandbox that had no name given: its state goes when it stops.
    private let removeOnStop: Bool

    public var name: String { state.name }
    /// The relay's socket (`unix:PATH`), for other clients (`tether exec --socket`).
    public var socket: String { "unix:" + state.relaySocket }

    private init(state: SandboxState, client: TetherClient, sandboxes: Sandboxes, removeOnStop: Bool) {
        self.state = state
        self.client = client
        self.sandboxes = sandboxes
        self.removeOnStop = removeOnStop
    }

    // MARK: lifecycle

    /// Boots a sandbox and returns once its agent said hello and its relay answers. It keeps
    /// running (under its supervisor, in the background) until `stop`, even after this process
    /// ends; `withSandbox` stops it for you.
    public static func boot(_ options: SandboxOptions) async throws(SandboxError) -> Sandbox {
        let state = try await offThread { () throws(SandboxError) in try launch(options) }
        guard state.relayPid != nil else {
            _ = try? await stop(state.name, grace: .seconds(2), options: options, remove: options.name == nil)
            throw .bootFailed(BootFailure(stage: BootStage(rawValue: "relay"), errno: 0,
                                          message: "the sandbox booted but its relay did not start: " + state.warnings.joined(separator: "; "),
                                          hint: "see \(options.home.sandbox(state.name).supervisorLog.path)"))
        }
        var clientOptions = options.client ?? ClientOptions(socket: .unix(path: state.relaySocket))
        clientOptions.socket = .unix(path: state.relaySocket)
        do {
            let client = try await TetherClient.connect(clientOptions)
            return Sandbox(state: state, client: client, sandboxes: options.sandboxes, removeOnStop: options.name == nil)
        } catch {
            _ = try? await stop(state.name, grace: .seconds(2), options: options, remove: options.name == nil)
            throw .bootFailed(BootFailure(stage: BootStage(rawValue: "relay"), errno: error.errno ?? 0,
                                          message: "the sandbox booted but its relay did not answer: \(error.description)",
                                          hint: error.suggestion))
        }
    }

    /// Boots a sandbox under `options.name`, first stopping one that runs under that name
    /// (shutdown, then SIGKILL after `grace`): `tether boot --replace --replace-grace`.
    public static func replace(_ options: SandboxOptions, grace: Duration = .seconds(10)) async throws(SandboxError) -> Sandbox {
        var replacing = options
        replacing.onConflict = .replace(grace: grace)
        return try await boot(replacing)
    }

    /// Boots without connecting a client and returns what the supervisor recorded, blocking
    /// the calling thread meanwhile: `tether boot`, which leaves the sandbox to other clients.
    /// A sandbox whose relay did not start is still running (its state says why, in
    /// `warnings`).
    public static func launch(_ options: SandboxOptions) throws(SandboxError) -> SandboxState {
        let name = options.name ?? SandboxName.random()
        let config = try options.resolvedConfig(name: name)
        let conflict: Sandboxes.Conflict
        switch options.onConflict {
        case .fail: conflict = .fail
        case .replace(let grace): conflict = .replace(graceMs: grace.milliseconds)
        }
        return try options.sandboxes.boot(config, onConflict: conflict)
    }

    /// Stops the sandbox: its agent (or init) is asked to shut down, and after `grace` it is
    /// killed. The client is closed first. A sandbox booted without a name leaves no state.
    @discardableResult
    public func stop(grace: Duration = .seconds(10)) async throws(SandboxError) -> Sandboxes.StopOutcome {
        client.close()
        let sandboxes = sandboxes, name = name, remove = removeOnStop
        return try await Self.offThread { () throws(SandboxError) in
            try Self.stop(name, grace: grace, sandboxes: sandboxes, remove: remove)
        }
    }

    /// Stops the sandbox called `name` under `options.home`, booted by anyone.
    @discardableResult
    public static func stop(_ name: String, grace: Duration = .seconds(10), options: SandboxOptions = SandboxOptions(),
                            remove: Bool = false) async throws(SandboxError) -> Sandboxes.StopOutcome {
        let sandboxes = options.sandboxes
        return try await offThread { () throws(SandboxError) in try stop(name, grace: grace, sandboxes: sandboxes, remove: remove) }
    }

    /// The blocking stop, for callers that are not async (`tether stop`).
    @discardableResult
    public static func stop(_ name: String, grace: Duration, sandboxes: Sandboxes, remove: Bool = false) throws(SandboxError)
        -> Sandboxes.StopOutcome {
        let outcome = try sandboxes.stop(name, graceMs: grace.milliseconds)
        // A sandbox nobody named is nobody's to look at again: `tether ls` would only fill up
        // with run-XXXXXX entries. A named one keeps its state (how it ended, its logs).
        if remove { try? FileManager.default.removeItem(at: sandboxes.home.sandbox(name).directory) }
        return outcome
    }

    // MARK: commands, through the relay

    /// Runs a program to its end; see `TetherClient.exec`.
    public func exec(_ argv: [String], _ options: ExecOptions = ExecOptions()) async throws(TetherError) -> ExecOutput {
        try await client.exec(argv, options)
    }

    /// `/bin/sh -c command` to its end.
    public func shell(_ command: String, _ options: ExecOptions = ExecOptions()) async throws(TetherError) -> ExecOutput {
        try await client.shell(command, options)
    }

    /// Starts a program and streams its events; see `TetherClient.execStream`.
    public func execStream(_ argv: [String], _ options: ExecOptions = ExecOptions()) async throws(TetherError) -> ExecHandle {
        try await client.execStream(argv, options)
    }

    /// Takes over a detached session; see `TetherClient.attach`.
    public func attach(session: UInt32, replay: Bool = true) async throws(TetherError) -> ExecHandle {
        try await client.attach(session: session, replay: replay)
    }

    /// The sessions of the sandbox's relay.
    public func listSessions() async throws(TetherError) -> [SessionInfo] {
        try await client.listSessions()
    }

    /// The sandbox's files, as the guest's root (`client.files(as:cwd:)` for another user).
    public var files: Files { client.files }

    /// Guest ports exposed on the host.
    public var ports: TetherClient.Ports { client.ports }

    /// Named background processes.
    public var processes: Processes { client.processes }

    // MARK: blocking work off the cooperative pool

    /// Runs blocking work (waitpid, pipe reads, the supervisor's grace) on a thread of its own,
    /// so no Swift concurrency thread sleeps in the kernel meanwhile.
    static func offThread<T: Sendable>(_ work: @escaping @Sendable () throws(SandboxError) -> T) async throws(SandboxError) -> T {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, SandboxError>, Never>) in
            DedicatedThread.start(named: "tether-sandbox-op") {
                do throws(SandboxError) { continuation.resume(returning: .success(try work())) } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }
}

/// Boots a sandbox, runs `body` with it, and stops it however `body` ends (returns, throws, or
/// its task is cancelled): the scoped form, so no sandbox outlives the code that used it. A
/// failure to stop is thrown when `body` succeeded; when `body` threw, its error wins.
public func withSandbox<T: Sendable>(_ options: SandboxOptions = SandboxOptions(), stopGrace: Duration = .seconds(2),
                                     _ body: (Sandbox) async throws -> T) async throws -> T {
    let sandbox = try await Sandbox.boot(options)
    let result: T
    do {
        result = try await body(sandbox)
    } catch {
        _ = try? await sandbox.stop(grace: stopGrace)
        throw error
    }
    try await sandbox.stop(grace: stopGrace)
    return result
}
