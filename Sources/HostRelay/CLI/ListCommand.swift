import Foundation
import TetherSandbox
import TetherPosix

/// `tether ls`
enum ListCommand: Command {
    static let name = "ls"
    static let summary = "list sandboxes"
    static let help = """
        usage: tether ls
        Lists the sandboxes under $TETHER_HOME (default ~/.tether): name, status, backend, pid, age, rootfs.
        \(TetherCLI.commonHelpLines)

        """
    static let options: [OptionSpec] = []

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            guard parsed.positionals.isEmpty else { throw UsageError(message: "tether ls takes no arguments", command: name) }
            let sandboxes = SandboxCommands.sandboxes()
            do throws(SandboxError) { try sandboxes.home.check() } catch {
                // No $TETHER_HOME yet: no sandboxes. Anything else about it is worth refusing.
                guard case .unsafeState(let unsafe) = error, case .failed(_, let cause) = unsafe.problem, cause == .noEntry else {
                    throw error
                }
            }
            var rows = [["NAME", "STATUS", "BACKEND", "PID", "AGE", "ROOTFS"]]
            let now = Date().timeIntervalSince1970
            for entry in sandboxes.list() {
                if let problem = entry.problem {
                    // Its directory is not ours or is open to others: nothing in it was read.
                    rows.append([entry.name, "unsafe", "-", "-", "-", "-"])
                    ErrorBlock.warning("\(entry.name): \(problem.message)", hint: problem.hint)
                    continue
                }
                let state = entry.state
                // The lock is the truth about liveness; state.json may be from a supervisor that died.
                let status = entry.isLive ? (state?.status.rawValue ?? "booting")
                    : (state.map { [.running, .stopping, .booting].contains($0.status) ? "dead" : $0.status.rawValue } ?? "unknown")
                let age = state.map { SandboxCommands.formatAge(now - $0.startedAt) } ?? "-"
                rows.append([entry.name, status, state?.backend.rawValue ?? "-",
                             entry.isLive ? (state?.sandboxPid.map(String.init) ?? "-") : "-", age, state?.rootfs ?? "-"])
            }
            writeStandardOutput(TextTable.render(rows))
            return 0
        }
    }
}
