import Foundation

/// A tiny guest root file system in a temporary directory, for running the agent as PID 1
/// in new namespaces: /bin/busybox with a link per applet, the agent at /sbin/tether-agent,
/// /etc/passwd and /etc/group with root and `sandbox` (uid 1000, also in group `wheel`).
///
/// The agent is the static build from TETHER_AGENT_STATIC (scripts/test.sh builds it) or,
/// without it, the debug build with the shared libraries `ldd` names copied to the same paths.
public final class GuestRoot {
    public let directory: TemporaryDirectory
    public var path: String { directory.path }

    public init() throws {
        guard FileManager.default.isExecutableFile(atPath: "/bin/busybox") else {
            throw ClientError("/bin/busybox is missing (apt-get install busybox-static)")
        }
        directory = try TemporaryDirectory("tether-root")
        let fm = FileManager.default
        for dir in ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root", "home/sandbox", ".tether", "usr/bin"] {
            try fm.createDirectory(atPath: path + "/" + dir, withIntermediateDirectories: true)
        }
        try fm.copyItem(atPath: "/bin/busybox", toPath: path + "/bin/busybox")
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

    private func installAgent() throws {
        let fm = FileManager.default
        let target = path + "/sbin/tether-agent"
        if let staticAgent = ProcessInfo.processInfo.environment["TETHER_AGENT_STATIC"], fm.fileExists(atPath: staticAgent) {
            try fm.copyItem(atPath: staticAgent, toPath: target)
            return
        }
        let debug = AgentProcess.debugBinary
        try fm.copyItem(atPath: debug, toPath: target)
        // `libx.so => /path/libx.so (0x...)` and `/lib64/ld-linux-x86-64.so.2 (0x...)`.
        for line in try runCommand(["/usr/bin/ldd", debug]).output.split(separator: "\n") {
            guard let library = line.split(separator: " ").first(where: { $0.hasPrefix("/") }).map(String.init) else { continue }
            let destination = path + library
            try fm.createDirectory(atPath: (destination as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            if !fm.fileExists(atPath: destination) { try fm.copyItem(atPath: library, toPath: destination) }
        }
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
