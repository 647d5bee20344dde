import Foundation
import TetherBoot
import TetherClient

/// What `Sandbox.boot` boots: a name (or a fresh `run-XXXXXX` one), a root file system (or the
/// default guest tree), the boot options of `tether boot`, and what to do when the name is
/// taken. The CLI's `boot` and `run` fill one of these from their arguments.
public struct SandboxOptions: Sendable {
    /// Where the guest's root directory comes from.
    public enum Rootfs: Sendable, Equatable {
        /// The bundled guest tree (busybox and the agent): the one `$TETHER_HOME/default-rootfs`
        /// records, else what rootfs/build.sh assembles on first use (`DefaultRootfs`).
        case `default`
        /// A directory on the host (made absolute against the current directory).
        case directory(String)
    }

    /// How a name that is in use is treated.
    public enum Conflict: Sendable, Equatable {
        /// Throw `SandboxError.nameConflict` with the running one's pid.
        case fail
        /// Stop the running one (shutdown, then SIGKILL after `grace`) and boot anew.
        case replace(grace: Duration)
    }

    /// nil: a fresh `run-XXXXXX` name, and the sandbox's state is removed when it stops
    /// (nobody can name it again); a named sandbox keeps its state for `tether ls`.
    public var name: String?
    public var rootfs: Rootfs = .default
    public var onConflict: Conflict = .fail
    /// Backend, limits, network, init, hostname, seccomp, ... (`name` and `rootfs` here are
    /// overwritten by the two fields above).
    public var config: SandboxConfig
    /// `$TETHER_HOME`: where sandboxes keep their state.
    public var home: TetherHome
    /// The directory holding `tether-sandbox` (the supervisor) and `tether` (the relay).
    public var toolsDirectory: String
    /// How the library's client talks to the sandbox's relay (retry budget, agent timeout).
    /// Its socket is set by `boot`.
    public var client: ClientOptions?

    public init(name: String? = nil, rootfs: Rootfs = .default, onConflict: Conflict = .fail,
                home: TetherHome = .fromEnvironment(), toolsDirectory: String = SandboxTools.defaultDirectory) {
        self.name = name
        self.rootfs = rootfs
        self.onConflict = onConflict
        self.home = home
        self.toolsDirectory = toolsDirectory
        self.config = SandboxConfig(name: name ?? "", rootfs: "",
                                    relayExecutable: URL(fileURLWithPath: toolsDirectory).appendingPathComponent("tether").path)
    }

    /// The sandboxes of `home`, with the supervisor from `toolsDirectory`.
    public var sandboxes: Sandboxes {
        Sandboxes(home: home, supervisorExecutable: URL(fileURLWithPath: toolsDirectory).appendingPathComponent("tether-sandbox").path)
    }

    /// The configuration to boot: the name chosen, the root file system found (assembling the
    /// default one if this is its first use), the relay beside the supervisor.
    func resolvedConfig(name: String) throws(SandboxError) -> SandboxConfig {
        var resolved = config
        resolved.name = name
        switch rootfs {
        case .default:
            resolved.rootfs = try DefaultRootfs.path(home: home, toolsDirectory: toolsDirectory)
        case .directory(let path):
            resolved.rootfs = URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
                .standardizedFileURL.path
        }
        return resolved
    }
}

/// Where the host programs a sandbox needs are found.
public enum SandboxTools {
    /// `$TETHER_TOOLS_DIR`, else the directory of the running executable (`.build/debug` for
    /// the CLI and for programs built in this package).
    public static var defaultDirectory: String {
        if let directory = ProcessInfo.processInfo.environment["TETHER_TOOLS_DIR"], !directory.isEmpty { return directory }
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().path
    }
}
