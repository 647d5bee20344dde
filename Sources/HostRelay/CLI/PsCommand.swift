#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherClient
import TetherProtocol

/// `tether ps`
enum PsCommand: Command {
    static let name = "ps"
    static let summary = "list the relay's sessions"
    static let help = """
        usage: tether ps [OPTIONS]

        Lists the sessions the relay knows: running ones, detached ones (with or without a
        client attached), and finished detached ones whose output nobody picked up yet.

        Options:
              --json            one JSON array instead of a table (and an error as one JSON
                                object, as every command's --json)
        \(RelayTarget.helpLines)
          -h, --help            this text

        """

    /// --json (the table as JSON) is one of `TetherCLI.commonOptions`.
    static let options: [OptionSpec] = RelayTarget.options

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            guard parsed.positionals.isEmpty else { throw UsageError(message: "unexpected \(parsed.positionals[0])", command: name) }
            let clientOptions = try RelayTarget.clientOptions(parsed, command: name)
            let json = parsed.has("json")
            return withClient(clientOptions) { client async throws(TetherError) -> Int32 in
                let sessions = try await client.listSessions()
                writeStandardOutput(json ? renderJSON(sessions) : renderTable(sessions))
                return 0
            }
        }
    }

    static func state(_ session: SessionInfo) -> String {
        if let exited = session.exited { return exited.code.map { "exited \($0)" } ?? "killed \(exited.signal ?? 0)" }
        if session.detached { return session.attached ? "detached*" : "detached" }
        return "running"
    }

    static func renderTable(_ sessions: [SessionInfo]) -> String {
        var rows = [["SESSION", "PID", "STATE", "STARTED", "COMMAND"]]
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        for session in sessions {
            let started = session.startedNs == 0 ? "-"
                : formatter.string(from: Date(timeIntervalSince1970: Double(session.startedNs) / 1e9))
            rows.append([String(session.session), String(session.pid), state(session), started,
                         CommandLineText.render(session.argv)])
        }
        var out = TextTable.render(rows)
        if sessions.contains(where: { $0.detached && $0.attached && $0.exited == nil }) {
            out += "(detached*: detached, with a client attached now)\n"
        }
        return out
    }

    static func renderJSON(_ sessions: [SessionInfo]) -> String {
        let objects: [[String: Any]] = sessions.map { s in
            var object: [String: Any] = ["session": s.session, "pid": s.pid, "argv": s.argv, "tty": s.tty,
                                         "detached": s.detached, "attached": s.attached, "startedNs": s.startedNs]
            if let exited = s.exited { object["exited"] = JSONText.exited(exited) }
            return object
        }
        return JSONText.render(objects, fallback: "[]") + "\n"
    }
}
