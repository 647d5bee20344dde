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
    /// Returns the process's exit status.
    static func run(_ arguments: ArraySlice<String>) -> Int32
}

/// Every subcommand, in the order `tether --help` lists them.
nonisolated(unsafe) let commands: [any Command.Type] = [
    RunCommand.self, BootCommand.self, ListCommand.self, StopCommand.self, RemoveCommand.self,
    ExecCommand.self, ShellCommand.self, AttachCommand.self, PsCommand.self, KillCommand.self, LogsCommand.self, PingCommand.self,
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
        $TETHER_HOME (default ~/.tether).

        """

    static func main(_ arguments: [String]) -> Int32 {
        let rest = arguments.dropFirst()
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
        guard let command = commands.first(where: { $0.name == name }) else {
            writeStandardError(ErrorBlock.render(message: "unknown command '\(name)'", hint: "see `tether --help`"))
            return CLIExit.usage
        }
        return command.run(rest.dropFirst())
    }

    /// Runs a command body, printing any error as a block; a library error ends the command
    /// under its `convention` (exec maps spawn failures to 126/127).
    static func guarded(_ command: String, _ convention: CLIExit.Convention = .command,
                        _ body: () throws -> Int32) -> Int32 {
        do { return try body() } catch let error as UsageError {
            ErrorBlock.print(error)
            return CLIExit.usage
        } catch let error as CLIError {
            ErrorBlock.print(error)
            return error.exitStatus
        } catch let error as TetherError {
            ErrorBlock.print(error)
            return CLIExit.status(for: error, convention)
        } catch {
            writeStandardError(ErrorBlock.render(message: "\(command): \(error)", hint: nil))
            return CLIExit.failure
        }
    }

    /// Parses, and handles `--help`: nil means help was printed.
    static func parse(_ arguments: ArraySlice<String>, command: any Command.Type, options: [OptionSpec],
                      stopAtFirstPositional: Bool = false) throws -> ParsedArguments? {
        let parsed = try parseArguments(arguments, command: command.name, options: options + [OptionSpec("-h", "--help")],
                                        stopAtFirstPositional: stopAtFirstPositional)
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
            ErrorBlock.print(error)
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
        writeStandardError(ErrorBlock.render(message: "cannot start: \(error)", hint: nil))
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
