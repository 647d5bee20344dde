import Foundation
import TetherPosix

/// Where sandbox state lives: `$TETHER_HOME`, default `~/.tether`, so a CI job or a test can
/// isolate it. One directory per sandbox name:
///
/// ```
/// $TETHER_HOME/sandboxes/NAME/
///   lock             flock(2)ed by the sandbox's supervisor for as long as the sandbox lives
///   config.json      what was asked for (SandboxConfig)
///   state.json       pids, status, sockets, warnings (SandboxState)
///   agent.sock       the agent's socket (namespace: bound by the host; krun: by libkrun)
///   relay.sock       where clients connect (`--sandbox NAME` resolves to this)
///   tunnel.sock      the agent's tunnel endpoint: one connection per tunnelled port connection
///   ports.json       the exposed ports (the relay's; removed when the sandbox ends)
///   boot-error.json  why it did not come up (BootFailure)
///   console.log      the agent's stdout/stderr (namespace) or the VM console (krun)
///   supervisor.log   the supervisor's own messages
///   overlay/         upper and work dirs when the rootfs is mounted as an overlay
/// ```
///
/// `$TETHER_HOME`, `sandboxes/` and every sandbox directory must be real directories of the
/// effective user that group and others cannot write (they are created 0700): whoever can
/// write one can plant a link that turns the host's next write into a write elsewhere, or a
/// `state.json` that names someone else's process. Every use checks them with lstat(2)
/// (`checkedSandbox`, `preparedSandbox`) and refuses with `SandboxError.unsafeState`.
public struct TetherHome: Sendable {
    public let root: URL

    public init(root: URL) { self.root = root.standardizedFileURL }

    /// `$TETHER_HOME`, else `~/.tether`.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> TetherHome {
        if let path = environment["TETHER_HOME"], !path.isEmpty {
            return TetherHome(root: URL(fileURLWithPath: path, isDirectory: true))
        }
        let home = environment["HOME"].map { URL(fileURLWithPath: $0, isDirectory: true) }
            ?? FileManager.default.homeDirectoryForCurrentUser
        return TetherHome(root: home.appendingPathComponent(".tether", isDirectory: true))
    }

    public var sandboxesDirectory: URL { root.appendingPathComponent("sandboxes", isDirectory: true) }

    public func sandbox(_ name: String) -> SandboxPaths {
        SandboxPaths(directory: sandboxesDirectory.appendingPathComponent(name, isDirectory: true))
    }

    /// Checks `$TETHER_HOME` and `sandboxes/` (see the type's comment); creates what is missing
    /// of them (0700) when `create` is set.
    public func check(create: Bool = false) throws(SandboxError) {
        if create {
            // The directories above $TETHER_HOME are not Tether's; only a missing one is made.
            try? FileManager.default.createDirectory(at: root.deletingLastPathComponent(), withIntermediateDirectories: true)
        }
        do {
            for directory in [root.path, sandboxesDirectory.path] {
                if create { try PrivateFiles.makeDirectory(directory) } else { try PrivateFiles.checkDirectory(directory) }
            }
        } catch {
            throw .unsafeState(error)
        }
    }

    /// The paths of an existing sandbox, once `$TETHER_HOME`, `sandboxes/` and its directory
    /// passed the checks. A missing directory is `notRunning`.
    public func checkedSandbox(_ name: String) throws(SandboxError) -> SandboxPaths {
        guard SandboxName.isValid(name) else { throw .invalidName(name) }
        let paths = sandbox(name)
        for directory in [root.path, sandboxesDirectory.path, paths.directory.path] {
            do { try PrivateFiles.checkDirectory(directory) } catch {
                // Nothing there: no such sandbox, not a danger.
                if case .failed(_, let cause) = error.problem, cause.rawValue == ENOENT { throw .notRunning(name: name) }
                throw .unsafeState(error)
            }
        }
        return paths
    }

    /// The paths of a sandbox about to boot: `$TETHER_HOME`, `sandboxes/` and its directory are
    /// created (0700) where missing, and checked.
    public func preparedSandbox(_ name: String) throws(SandboxError) -> SandboxPaths {
        guard SandboxName.isValid(name) else { throw .invalidName(name) }
        try check(create: true)
        let paths = sandbox(name)
        do { try PrivateFiles.makeDirectory(paths.directory.path) } catch { throw .unsafeState(error) }
        return paths
    }

    /// Names of every sandbox directory (running or not), sorted.
    public func sandboxNames() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: sandboxesDirectory.path)) ?? []
        return names.filter { SandboxName.isValid($0) }.sorted()
    }
}

/// The files of one sandbox (see `TetherHome`).
public struct SandboxPaths: Sendable {
    public let directory: URL
    public var lock: URL { file("lock") }
    public var config: URL { file("config.json") }
    public var state: URL { file("state.json") }
    public var agentSocket: URL { file("agent.sock") }
    public var relaySocket: URL { file("relay.sock") }
    /// The agent's tunnel endpoint for exposed ports (namespace: bound by the host; krun: by libkrun).
    public var tunnelSocket: URL { file("tunnel.sock") }
    /// The exposed ports, kept by the relay across its restarts; removed when the sandbox ends.
    public var ports: URL { file("ports.json") }
    public var bootError: URL { file("boot-error.json") }
    public var console: URL { file("console.log") }
    public var supervisorLog: URL { file("supervisor.log") }
    public var execLog: URL { file("exec.log") }
    public var overlay: URL { file("overlay") }

    private func file(_ name: String) -> URL { directory.appendingPathComponent(name) }
}

/// Sandbox names: what fits in a path component, a hostname and a cgroup name.
public enum SandboxName {
    public static let maxLength = 63

    /// 1-63 of [A-Za-z0-9_.-], starting with a letter or digit.
    public static func isValid(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= maxLength else { return false }
        func alnum(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) }
        return alnum(first) && name.utf8.allSatisfy { alnum($0) || $0 == 0x2D || $0 == 0x2E || $0 == 0x5F }
    }

    /// A fresh name for `tether run` without --name: run-XXXXXX.
    public static func random(prefix: String = "run") -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        return prefix + "-" + String((0..<6).map { _ in alphabet.randomElement()! })
    }
}
