import TetherProtocol

/// One or more values of every message kind, used by the round-trip tests.
enum Samples {
    static let messages: [any Message] = [
        Hello(role: .agent, name: "sandbox-1", pid: 1, capabilities: ["pty", "exec"], agentVersion: "0.1.0",
              bootNs: 123_456_789, readyNs: 234_567_890),
        Hello(role: .client, name: "", pid: 0),
        ErrorMessage(code: .badPayload, message: "key 'argv' is missing", errno: 22),
        ErrorMessage(code: .framing, message: ""),
        Ping(nonce: .max), Pong(nonce: 7),
        Shutdown(graceMs: 5000), Shutdown(),
        ExecRequest(argv: ["/bin/sh", "-c", "echo hi"], env: ["A": "1", "LANG": "C.UTF-8"], cwd: "/tmp",
                    user: "sandbox:sandbox", tty: TerminalSize(rows: 24, cols: 80), stdin: .pipe, timeoutMs: 10_000,
                    killGraceMs: 500, drainMs: 100,
                    rlimits: ["nofile": ResourceLimit(soft: 1024, hard: 4096), "core": ResourceLimit(soft: 0, hard: nil)],
                    detach: true, seccomp: .restricted),
        ExecRequest(argv: ["true"]),
        ExecRequest(argv: ["ls", OSString(bytes: [0x63, 0x61, 0x66, 0xE9])], env: [OSString(bytes: [0xFF]): OSString(bytes: [0xFE])]),
        Started(pid: 4242),
        StdinError(errno: 32, message: "Broken pipe"),
        Exited.code(3), Exited.signal(9, coreDumped: true), Exited(code: -1),
        Done(),
        Failed(kind: .notFound, errno: 2, stage: .exec, message: "no such file"),
        Resize(rows: 50, cols: 132),
        SignalRequest(number: 15),
        KillRequest(),
        Ack(bytes: 131_072),
        ListSessions(),
        SessionList(sessions: [
            SessionInfo(session: 5, pid: 77, argv: ["sleep", "9"], tty: false, detached: true, attached: false,
                        startedNs: 1_700_000_000_000_000_000),
            SessionInfo(session: 6, pid: 78, argv: [], tty: true, detached: false, attached: true, startedNs: 1,
                        exited: .signal(15)),
        ]),
        SessionList(sessions: []),
        Attach(session: 5, replay: false),
        Attached(session: 5, pid: 77, tty: true, droppedBytes: 1024),
        Detach(),
        Detached(session: 5),
        LogsRequest(session: 12, follow: true), LogsRequest(),
        SignalSession(session: 12, number: 9),
        ExposePort(guestPort: 8080, hostPort: 18080, hostAddress: "127.0.0.1", name: "web"),
        ExposePort(guestPort: 70000, check: false),
        PortExposed(port: PortInfo(guestPort: 8080, hostAddress: "::1", hostPort: 18080, name: "web")),
        UnexposePort(guestPort: 8080),
        ListPorts(),
        PortList(ports: [PortInfo(guestPort: 1, hostAddress: "0.0.0.0", hostPort: 65535, listening: false, problem: "portInUse: x",
                                  connections: 9, refusals: 2, lastRefusal: "connectionRefused: y")]),
        PortList(ports: []),
        TunnelOpen(guestPort: 80, request: .max, probe: true), TunnelOpen(guestPort: 65535, request: 0),
        TunnelOpened(address: "[::1]:80"), TunnelOpened(listeners: ["127.0.0.1:80", "[::]:80"]),
    ] + Array(InteropTests.fileMessages.values) + processMessages

    static let sampleProcess = ProcessEntry(name: "web", session: 3, pid: 77, state: .ready, argv: ["httpd", "-f"], restarts: 1,
                                            startedNs: 1_700_000_000_000_000_000, readyNs: 1_700_000_000_020_000_000,
                                            exited: nil, logStart: 10, logEnd: 4096)

    /// The background-process kinds (0x50-0x5F).
    static let processMessages: [any Message] = [
        ProcessStart(name: "web", exec: ExecRequest(argv: ["httpd", "-f", "-p", "8080"], detach: true),
                     ready: Readiness(ports: [8080], http: [HTTPProbe(host: "::1", port: 8080, path: "/health")],
                                      logs: ["listening on [0-9]+"], files: ["/run/web.pid"], execs: [["/bin/sh", "-c", "true"]]),
                     waitTimeoutMs: 2000, logBytes: 1 << 20, maxRestarts: 2),
        ProcessStart(name: "sleeper", exec: ExecRequest(argv: ["sleep", "100"], detach: true)),
        ProcessReady(process: sampleProcess),
        ProcessFailed(code: .processExitedBeforeReady, message: "exited", condition: "port 8080", elapsedMs: 12,
                      exited: .code(3), tail: Array("boom\n".utf8), process: sampleProcess),
        ProcessFailed(code: .processReadyTimeout, message: "not ready", condition: "log /x/", elapsedMs: 2001, tail: [],
                      process: sampleProcess),
        ProcessList(), ProcessList(name: "web"),
        ProcessTable(processes: [sampleProcess, ProcessEntry(name: "db", session: 4, pid: 80, state: .killed, argv: [], restarts: 0,
                                                             startedNs: 5, exited: .signal(15))]),
        ProcessTable(processes: []),
        ProcessLogs(name: "web", from: 4096, follow: true), ProcessLogs(name: "web", tail: 1024),
        ProcessLogPosition(offset: 4096, droppedBytes: 17),
        ProcessSignal(name: "web", number: 15),
        ProcessWait(name: "web"),
        ProcessEnded(process: sampleProcess),
        ProcessRemove(name: "web"),
    ]

    /// Every known kind has at least one sample (data kinds are raw bytes, not messages).
    static var kindsCovered: Set<FrameKind> { Set(messages.map { type(of: $0).kind }) }

    /// Frames of every known kind: messages plus data frames (including empty stdin + END).
    static var frames: [Frame] {
        var frames: [Frame] = []
        for (index, message) in messages.enumerated() {
            frames.append(Frame(id: UInt32(index), flags: index % 3 == 0 ? .start : [], kind: type(of: message).kind,
                                payload: message.cborBytes))
        }
        frames.append(Frame(id: 9, kind: .stdout, payload: Array("hello\n".utf8)))
        frames.append(Frame(id: 9, kind: .stderr, payload: [0, 1, 2, 255]))
        frames.append(Frame(id: 9, kind: .stdin, payload: Array(repeating: 0x41, count: 300)))
        frames.append(Frame(id: 9, flags: .end, kind: .stdin, payload: []))
        frames.append(Frame(id: .max, flags: [.start, .end], kind: FrameKind(rawValue: 0xEE), payload: [1, 2, 3]))
        return frames
    }
}

/// Decodes `message`'s own encoding as its own type and compares: a round trip through bytes.
func roundTrips(_ message: any Message) throws -> Bool {
    func check<M: Message>(_ m: M) throws -> Bool { try M(cbor: m.cborBytes) == m }
    return try check(message)
}
