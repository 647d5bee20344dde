#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization
import TetherClient
import TetherPosix

/// One `tether` subcommand: its name, one-line summary, `--help` text, and what it does.
protocol Command {
    static var name: String { get }
    static var summary: String { get }
    static var help: String { get }
    /// The parser's table: every option the command takes (`TetherCLI.commonOptions` are
    /// added to it). Its --help names each one (CLITests check).
    static var options: [OptionSpec] { get }
    /// Whether the first positional argument ends the options (a command to run follows).
    static var stopsAtFirstPositional: Bool { get }
    /// Returns the process's exit status.
    static func run(_ arguments: ArraySlice<String>) -> Int32
}

extension Command {
    static var stopsAtFirstPositional: Bool { false }
}

/// Every subcommand, in the order `tether --help` lists them.
nonisolated(unsafe) let commands: [any Command.Type] = [
    RunCommand.self, BootCommand.self, ListCommand.self, StopCommand.self, RemoveCommand.self,
    ExecCommand.self, ShellCommand.self, AttachCommand.self, PsCommand.self, KillCommand.self, LogsCommand.self, PingCommand.self,
    StartCommand.self, ProcCommand.self,
    CopyCommand.self, FsCommand.self,
    PortCommand.self,
    RelayCommand.self,
]

enum TetherCLI {
    static let usage = """
        usage: tether COMMAND [OPTIONS]

        Runs commands in a microVM sandbox through its relay.

        Commands:
        \(commands.map { "  " + $0.name.padding(toLength: 9, withPad: " ", startingAt: 0) + $0.summary }.joined(separator: "\n"))

        Run `tether COMMAND --help` for a command's options. Commands that talk to a relay take
        --sandbox NAME or --socket unix:PATH, or read TETHER_SOCKET. Sandboxes live under
        $TETHER_HOME (default ~/.tether). Every command takes --json (before its arguments, or
        `tether --json COMMAND`): an error is then one JSON object on stderr, {code, message,
        operation, context, suggestion, errno, timestamp}; TETHER_ERRORS=json does the same.

        """

    /// Options every command takes, whatever its own table says.
    static let commonOptions = [OptionSpec("--json"), OptionSpec("-h", "--help")]

    /// Their lines in every command's --help.
    static let commonHelpLines = """
              --json            an error is one JSON object on stderr (as TETHER_ERRORS=json)
          -h, --help            this text
        """

    /// Whether the command line asks for JSON errors: `--json` before the command, or among its
    /// options (before `--`, and before the command to run of exec, shell and run).
    /// Option values are skipped by the command's table, so `-w DIR` is not taken for the
    /// command to run; this is read before parsing, so that a usage mistake is JSON too.
    static func wantsJSONErrors(_ arguments: ArraySlice<String>, command: (any Command.Type)?) -> Bool {
        let takingValues = Set((command?.options ?? []).filter(\.takesValue).flatMap(\.names))
        var rest = arguments
        while let argument = rest.popFirst() {
            if argument == "--json" { return true }
            if argument == "--" { return false }
            if takingValues.contains(argument) {
                _ = rest.popFirst()
            } else if command?.stopsAtFirstPositional == true && !argument.hasPrefix("-") {
                return false
            }
        }
        return false
    }

    static func main(_ arguments: [String]) -> Int32 {
        var rest = arguments.dropFirst()
        if rest.first == "--json" {
            ErrorBlock.json = true
            rest = rest.dropFirst()
        }
        guard let name = rest.first else {
            writeStandardError(usage)
            return CLIExit.usage
        }
        if name == "-h" || name == "--help" || name == "help" {
            if rest.count > 1, let command = commands.first(where: { $0.name == rest[rest.startIndex + 1] }) {
                writeStandardOutput(command.help)
            } else {
                writeStandardOutput(usage)
            }
            return 0
        }
        let command = commands.first(where: { $0.name == name })
        if wantsJSONErrors(rest.dropFirst(), command: command) { ErrorBlock.json = true }
        guard let command else {
            ErrorBlock.report(UsageError(message: "unknown command '\(name)'", command: nil), operation: "tether")
            return CLIExit.usage
        }
        return command.run(rest.dropFirst())
    }

    /// Runs a command body; whatever it throws is reported (`ErrorBlock.report`, text or JSON)
    /// and ends the command under its `convention` (exec maps spawn failures to 126/127).
    static func guarded(_ command: String, _ convention: CLIExit.Convention = .command,
                        _ body: () throws -> Int32) -> Int32 {
        do { return try body() } catch {
            ErrorBlock.report(error, operation: command)
            return CLIExit.status(for: error, convention)
        }
    }

    /// Parses, and handles `--help`: nil means help was printed.
    /// `stopAtFirstPositional` is the command's own `stopsAtFirstPositional` unless given.
    static func parse(_ arguments: ArraySlice<String>, command: any Command.Type, options: [OptionSpec],
                      stopAtFirstPositional: Bool? = nil) throws -> ParsedArguments? {
        let parsed = try parseArguments(arguments, command: command.name, options: options + commonOptions,
                                        stopAtFirstPositional: stopAtFirstPositional ?? command.stopsAtFirstPositional)
        if parsed.has("json") { ErrorBlock.json = true }
        if parsed.has("help") {
            writeStandardOutput(command.help)
            return nil
        }
        return parsed
    }
}

/// Streams a session's events to local stdout/stderr and returns how the program ended.
/// SIGINT, SIGTERM and SIGHUP to the CLI go to the remote process group meanwhile. If local
/// stdout is a closed pipe, the remote program is killed (as SIGPIPE would end a local one).
func streamSession(_ handle: ExecHandle) async throws(TetherError) -> ExitStatus? {
    SignalWatcher.shared.setHandler { signal in handle.signal(signal) }
    defer { SignalWatcher.shared.setHandler(nil) }
    let pump = try OutputPump()
    var killed = false
    let status = try await pump.copyOutput(of: handle) {
        if pump.brokenPipe && !killed {
            killed = true
            handle.kill()
        }
    }
    if killed && status?.signal == SIGKILL { return ExitStatus(signal: SIGPIPE) }
    return status
}

/// Connects with `options`, runs `body` with the client, closes it. A `TetherError` is
/// printed as a block and ends the command under its `convention`.
func withClient(_ options: ClientOptions, _ convention: CLIExit.Convention = .command,
                _ body: @escaping @Sendable (TetherClient) async throws(TetherError) -> Int32) -> Int32 {
    runAsync {
        do throws(TetherError) {
            let client = try await TetherClient.connect(options)
            defer { client.close() }
            return try await body(client)
        } catch {
            ErrorBlock.report(error, operation: error.operation)
            return CLIExit.status(for: error, convention)
        }
    }
}

/// The CLI's one bridge from synchronous to async code: `main` (through `withClient`) runs
/// the async part of a command and waits for it. The main thread is not a Task, so blocking it
/// is allowed; nothing else in the CLI waits for async work.
func runAsync(_ body: @escaping @Sendable () async -> Int32) -> Int32 {
    let done: WakeGate
    do { done = try WakeGate() } catch {
        ErrorBlock.report(CLIError(message: "cannot start: \(error)", code: "internal"), operation: "tether")
        return CLIExit.failure
    }
    let result = Mutex<Int32>(CLIExit.failure)
    Task.detached {
        let status = await body()
        result.withLock { $0 = status }
        done.wake()
    }
    done.sleep()
    return result.withLock { $0 }
}
