#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TetherClient
import TetherPosix
import TetherProtocol

/// `tether proc ls|logs|kill|wait|rm`: the named background processes `tether start` made.
enum ProcCommand: Command {
    static let name = "proc"
    static let summary = "list, read the logs of, signal, wait for and remove background processes"
    static let help = """
        usage: tether proc ls [--json]
               tether proc logs NAME [--follow] [--from OFFSET | --tail BYTES] [--print-offset]
               tether proc kill NAME [-s SIG]
               tether proc wait NAME
               tether proc rm NAME

        ls     the processes: name, session (the agent's number of its exec session), pid,
               state (starting, running, ready, exited, killed, failed), restarts, exit,
               start and ready times
        logs   its output (stdout to stdout, stderr to stderr, in the order it came). Offsets
               count every byte the process ever wrote: --from OFFSET starts there (the offset
               --print-offset printed last time resumes with no gap and no duplicate), --tail
               BYTES that many bytes before the end; --follow keeps reading until it will not
               run again. Output the log no longer holds is reported on stderr
        kill   sends SIG (a number or a name; default TERM) to its process group; a process
               that dies of it is 'killed' and not restarted
        wait   waits until it will not run again; prints how it ended
        rm     forgets a process that will not run again, and its log

        Options:
              --json            (ls) one JSON array instead of a table; for every action, an
                                error is one JSON object on stderr
          -f, --follow          (logs) keep reading new output
              --from OFFSET     (logs) start at this byte offset
              --tail BYTES      (logs) start this many bytes before the end (64k, 1M, ...)
              --print-offset    (logs) at the end, print 'next offset N' on stderr
          -s, --signal SIG      (kill) the signal
        \(RelayTarget.helpLines)
          -h, --help            this text

        Exit status: 0 on success; for wait, the process's own status (its code, or 128+N
        when signal N ended it); 1 when there is no such process or tether failed; 2 for a
        usage error.

        """

    /// --json (ls as JSON) is one of `TetherCLI.commonOptions`.
    static let options: [OptionSpec] = [
        OptionSpec("-f", "--follow"), OptionSpec("--from", value: true), OptionSpec("--tail", value: true),
        OptionSpec("--print-offset"), OptionSpec("-s", "--signal", value: true),
    ] + RelayTarget.options

    static func run(_ arguments: ArraySlice<String>) -> Int32 {
        TetherCLI.guarded(name) {
            guard let parsed = try TetherCLI.parse(arguments, command: self, options: options) else { return 0 }
            guard let action = parsed.positionals.first else { throw UsageError(message: "give an action: ls, logs, kill, wait or rm", command: name) }
            let rest = Array(parsed.positionals.dropFirst())
            let clientOptions = try RelayTarget.clientOptions(parsed, command: name)
            func processName() throws -> String {
                guard rest.count == 1 else { throw UsageError(message: "proc \(action): give exactly one NAME", command: name) }
                return rest[0]
            }
            switch action {
            case "ls":
                guard rest.isEmpty else { throw UsageError(message: "proc ls: unexpected \(rest[0])", command: name) }
                let json = parsed.has("json")
                return withClient(clientOptions) { client async throws(TetherError) -> Int32 in
                    let processes = try await client.processes.list()
                    writeStandardOutput(json ? ProcessTableText.json(processes) : ProcessTableText.table(processes))
                    return 0
                }
            case "logs":
                let target = try processName()
                if parsed.value("from") != nil && parsed.value("tail") != nil {
                    throw UsageError(message: "proc logs: give --from or --tail, not both", command: name)
                }
                let from = try parsed.value("from").map { text throws -> UInt64 in
                    guard let offset = UInt64(text) else { throw UsageError(message: "--from: '\(text)' is not a byte offset", command: name) }
                    return offset
                }
                let tail = try parsed.value("tail").map { UInt64(try parseByteCount($0, option: "--tail", command: name)) }
                let follow = parsed.has("follow")
                let printOffset = parsed.has("print-offset")
                return withClient(clientOptions) { client async throws(TetherError) -> Int32 in
                    try await copyLogs(client.processes.handle(target), from: from, tail: tail, follow: follow, printOffset: printOffset)
                }
            case "kill":
                let target = try processName()
                let signal = try parsed.value("signal").map { try parseSignal($0, command: name) } ?? SIGTERM
                return withClient(clientOptions) { client async throws(TetherError) -> Int32 in
                    try await client.processes.handle(target).signal(signal)
                    return 0
                }
            case "wait":
                let target = try processName()
                return withClient(clientOptions) { client async throws(TetherError) -> Int32 in
                    let info = try await client.processes.handle(target).wait()
                    writeStandardOutput("\(info.name) \(ProcessTableText.ending(info))\n")
                    return info.exited?.shellStatus ?? 0
                }
            case "rm":
                let target = try processName()
                return withClient(clientOptions) { client async throws(TetherError) -> Int32 in
                    try await client.processes.handle(target).remove()
                    return 0
                }
            default:
                throw UsageError(message: "unknown action '\(action)' (ls, logs, kill, wait or rm)", command: name)
            }
        }
    }

    /// Writes the log to fds 1 and 2 as it comes; reports dropped output on stderr.
    static func copyLogs(_ process: BackgroundProcess, from: UInt64?, tail: UInt64?, follow: Bool, printOffset: Bool) async throws(TetherError) -> Int32 {
        let stream = try await process.logs(from: from, tail: tail, follow: follow)
        var next = from ?? 0
        var iterator = stream.makeAsyncIterator()
        while let chunk = try await iterator.next() {
            if chunk.droppedBefore > 0 {
                writeStandardError("tether: \(chunk.droppedBefore) bytes of '\(process.name)' output were dropped before offset \(chunk.offset) (the log holds the last --log-size bytes)\n")
            }
            do throws(Errno) { try FileIO.writeAll(chunk.stream == .stdout ? 1 : 2, chunk.bytes) } catch {
                stream.cancel()
                if error.rawValue == EPIPE { return 0 }
                throw TetherError(.internal, "cannot write the log: \(error)", operation: "processLogs", errno: error.rawValue)
            }
            next = chunk.nextOffset
        }
        if printOffset { writeStandardError("next offset \(next)\n") }
        return 0
    }
}

/// `tether proc ls` as text: a table for people, JSON for tools.
enum ProcessTableText {
    static func ending(_ info: ProcessEntry) -> String {
        guard let exited = info.exited else { return info.state.rawValue }
        let how = exited.code.map { "code \($0)" } ?? "signal \(exited.signal ?? 0)"
        return "\(info.state.rawValue) (\(how))"
    }

    static func table(_ processes: [ProcessEntry]) -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        func time(_ ns: UInt64?) -> String {
            guard let ns, ns > 0 else { return "-" }
            return formatter.string(from: Date(timeIntervalSince1970: Double(ns) / 1e9))
        }
        var rows = [["NAME", "SESSION", "PID", "STATE", "RESTARTS", "EXIT", "STARTED", "READY", "COMMAND"]]
        for p in processes {
            let exit = p.exited.map { $0.code.map { String($0) } ?? "signal \($0.signal ?? 0)" } ?? "-"
            rows.append([p.name, String(p.session), String(p.pid), p.state.rawValue, String(p.restarts), exit,
                         time(p.startedNs), time(p.readyNs), CommandLineText.render(p.argv)])
        }
        return TextTable.render(rows)
    }

    static func json(_ processes: [ProcessEntry]) -> String {
        let objects: [[String: Any]] = processes.map { p in
            var object: [String: Any] = ["name": p.name, "session": p.session, "pid": p.pid, "state": p.state.rawValue, "argv": p.argv,
                                         "restarts": p.restarts, "startedNs": p.startedNs, "logStart": p.logStart, "logEnd": p.logEnd]
            if let readyNs = p.readyNs { object["readyNs"] = readyNs }
            if let exited = p.exited { object["exited"] = JSONText.exited(exited) }
            return object
        }
        return JSONText.render(objects, fallback: "[]") + "\n"
    }
}
