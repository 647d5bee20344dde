import Foundation

/// A tiny guest root file system in a temporary directory, for running the agent as PID 1
/// in new namespaces: /bin/busybox with a link per applet, the agent at /sbin/tether-agent,
/// /etc/passwd and /etc/group with root and `sandbox` (uid 1000, also in group `wheel`).
///
/// The agent is the static build (see `staticAgent`).
public final class GuestRoot {
    public let directory: TemporaryDirectory
    public var path: String { directory.path }

    public init() throws {
        guard FileManager.default.isExecutableFile(atPath: "/bin/busybox") else {
            throw ClientError("/bin/busybox is missing (apt-get install busybox-static)")
        }
        directory = try TemporaryDirectory("tether-root")
        // A temporary directory is 0700; as the guest's / it must let other users (sandbox)
        // reach /bin, as a root file system does.
        guard chmod(directory.path, 0o755) == 0 else { throw ClientError("chmod \(directory.path): errno \(errno)") }
        let fm = FileManager.default
        for dir in ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root", "home/sandbox", ".tether", "usr/bin"] {
            try fm.createDirectory(atPath: path + "/" + dir, withIntermediateDirectories: true)
        }
        // Not FileManager's in-process copy: see `writeFile` (ETXTBSY when a child forked by
        // another test meanwhile inherited the write descriptor).
        try Self.copyExecutable("/bin/busybox", to: path + "/bin/busybox")
        let applets = try runCommand(["/bin/busybox", "--list"]).output.split(separator: "\n")
        for applet in applets where applet != "busybox" {
            try? fm.createSymbolicLink(atPath: path + "/bin/" + applet, withDestinationPath: "busybox")
        }
        try directory.write("etc/passwd", """
            root:x:0:0:root:/root:/bin/sh
            sandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh

            """)
        try directory.write("etc/group", """
            root:x:0:
            wheel:x:10:sandbox
            tty:x:5:
            sandbox:x:1000:

            """)
        try installAgent()
    }

    /// The static agent: $TETHER_AGENT_STATIC (scripts/test.sh sets it), else what
    /// scripts/build-agent.sh left in .build-static; nil when neither exists. Only a static
    /// agent can start as PID 1 without /proc: a dynamically linked Swift runtime runs its own
    /// initializers (which read /proc/self) before the agent's early-init constructor.
    public static var staticAgent: String? {
        if let path = ProcessInfo.processInfo.environment["TETHER_AGENT_STATIC"], !path.isEmpty,
           FileManager.default.isExecutableFile(atPath: path) { return path }
        let built = Binaries.repositoryRoot.appendingPathComponent(".build-static/tether-agent").path
        return FileManager.default.isExecutableFile(atPath: built) ? built : nil
    }

    private func installAgent() throws {
        guard let agent = Self.staticAgent else {
            throw ClientError("no static agent: run scripts/build-agent.sh and set TETHER_AGENT_STATIC")
        }
        try Self.copyExecutable(agent, to: path + "/sbin/tether-agent")
    }

    /// Copies an executable (see `writeFile` for why not in this process).
    public static func copyExecutable(_ source: String, to target: String) throws {
        try copyFile(source, to: target, mode: 0o755)
    }

    /// The command line that starts the agent as PID 1 of new PID, mount, UTS and IPC
    /// namespaces, chrooted here (`unshare` stays its parent, and exits with its status).
    public func pid1Command(_ arguments: [String]) -> [String] {
        ["/usr/bin/unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc", "--root=" + path,
         "/sbin/tether-agent"] + arguments
    }

    public func read(_ relative: String) -> String? {
        try? String(contentsOfFile: path + "/" + relative, encoding: .utf8)
    }
}
