import TetherProtocol

/// Everything `tether relay` can be told. Defaults are what the CLI uses.
public struct RelayConfiguration: Sendable {
    /// Where the agent is: `unix:`, `vsock:`, `hvsock:` or `fd:`.
    public var agent: Address
    /// Where clients connect: `unix:PATH` (or an inherited listening `fd:N`).
    public var listen: Address
    /// The agent's tunnel endpoint (`--tunnel`): one connection per tunnelled connection of an
    /// exposed port. nil: ports cannot be exposed.
    public var tunnel: Address?
    /// Where the exposed ports are kept across relay restarts (`ports.json`); nil: nowhere.
    public var portsFile: String?
    /// How long to keep trying to reach the agent (until its hello arrives), at start and
    /// after the connection drops. When it runs out the relay stops.
    public var agentTimeout: Duration = .seconds(30)
    /// One connection attempt that has not produced the agent's hello after this long is
    /// closed and retried (libkrun accepts the host side before the guest listens).
    public var helloTimeout: Duration = .seconds(3)
    /// How often the relay pings the agent.
    public var pingInterval: Duration = .seconds(5)
    /// Silence from the agent after which clients get `agentUnresponsive`.
    public var unresponsiveAfter: Duration = .seconds(15)
    /// Output kept per detached session while nobody watches; older output is dropped and
    /// counted (`attached.droppedBytes`).
    public var replayBytes: Int = 1 << 20
    /// Finished detached sessions kept for a later `attach`; beyond it the oldest is forgotten.
    public var maxFinishedDetached: Int = 256
    /// Clients connected at once at most; the next one gets `tooManyClients` on id 0 and is
    /// closed. Each costs a descriptor and a little memory (its link and queues); the relay
    /// raises its own descriptor limit to the hard limit at start so that this cap, not the
    /// limit, is what normally turns clients away.
    public var maxClients: Int = RelayConfiguration.defaultMaxClients
    public static let defaultMaxClients = 4096
    /// exec.log settings; nil writes no log.
    public var log: ExecLog.Configuration?
    /// The name in the relay's hello.
    public var name: String = "tether-relay"
    /// Called on the relay's thread once its sockets and log are open and the agent answered,
    /// before the first client is served: where the seccomp filter goes (issue 7).
    public var afterSetup: (@Sendable () throws -> Void)?
    /// Diagnostics (one line each, no newline); defaults to standard error.
    public var diagnostics: @Sendable (String) -> Void = { line in RelayDiagnostics.standardError(line) }

    public init(agent: Address, listen: Address) {
        self.agent = agent
        self.listen = listen
    }
}
