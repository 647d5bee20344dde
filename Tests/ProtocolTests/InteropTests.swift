import Foundation
import Testing
import TestSupport
@testable import TetherProtocol

/// Interop with Python's cbor2, an implementation nobody on this project wrote.
/// Vectors: `scripts/cbor2-vectors.py write Tests/ProtocolTests/Vectors/cbor2-vectors.txt`.
@Suite struct InteropTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    struct Vector { let name: String; let bytes: [UInt8]; let diagnostic: String }

    static func vectors() throws -> [Vector] {
        let text = try String(contentsOf: root.appendingPathComponent("Tests/ProtocolTests/Vectors/cbor2-vectors.txt"), encoding: .utf8)
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
            let parts = line.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
            return Vector(name: String(parts[0]), bytes: hex(String(parts[1])), diagnostic: String(parts[2]))
        }
    }

    /// What each `msg-*` vector must decode to, written from the kinds in Frame.swift.
    static let expectedMessages: [String: any Message] = [
        "msg-hello": Hello(role: .agent, name: "sandbox-1", pid: 1, capabilities: ["pty", "exec"], agentVersion: "0.1.0",
                           bootNs: 123_456_789, readyNs: 234_567_890),
        "msg-hello-minimal": Hello(role: .client, name: "", pid: 0),
        "msg-error": ErrorMessage(code: .badPayload, message: "key 'argv' is missing", errno: 22),
        "msg-ping": Ping(nonce: .max),
        "msg-pong": Pong(nonce: 7),
        "msg-shutdown": Shutdown(graceMs: 5000),
        "msg-shutdown-empty": Shutdown(),
        "msg-exec": ExecRequest(argv: ["/bin/sh", "-c", "echo hi"], env: ["A": "1", "LANG": "C.UTF-8"], cwd: "/tmp",
                                user: "sandbox:sandbox", tty: TerminalSize(rows: 24, cols: 80), stdin: .pipe,
                                timeoutMs: 10_000, killGraceMs: 500, drainMs: 100,
                                rlimits: ["nofile": ResourceLimit(soft: 1024, hard: 4096), "core": ResourceLimit(soft: 0, hard: nil)],
                                detach: true, seccomp: .restricted),
        "msg-exec-minimal": ExecRequest(argv: ["true"]),
        "msg-exec-bytes-arg": ExecRequest(argv: ["ls", OSString(bytes: Array("caf".utf8) + [0xE9])]),
        "msg-started": Started(pid: 4242),
        "msg-stdinError": StdinError(errno: 32, message: "Broken pipe"),
        "msg-exited-code": Exited.code(3),
        "msg-exited-signal": Exited.signal(9, coreDumped: true),
        "msg-done": Done(),
        "msg-failed": Failed(kind: .notFound, errno: 2, stage: .exec, message: "no such file"),
        "msg-resize": Resize(rows: 50, cols: 132),
        "msg-signal": SignalRequest(number: 15),
        "msg-kill": KillRequest(),
        "msg-ack": Ack(bytes: 131_072),
        "msg-listSessions": ListSessions(),
        "msg-sessionList": SessionList(sessions: [SessionInfo(session: 5, pid: 77, argv: ["sleep", "9"], tty: false,
                                                              detached: true, attached: false, startedNs: 1_700_000_000_000_000_000)]),
        "msg-attach": Attach(session: 5, replay: false),
        "msg-attached": Attached(session: 5, pid: 77, tty: true, droppedBytes: 1024),
        "msg-detach": Detach(),
        "msg-detached": Detached(session: 5),
        "msg-logs": LogsRequest(session: 12, follow: true),
        "msg-logs-empty": LogsRequest(),
        "msg-signalSession": SignalSession(session: 12, number: 9),
        "msg-processStart": ProcessStart(name: "web", exec: ExecRequest(argv: ["httpd"], detach: true),
                                         ready: Readiness(ports: [8080], logs: ["ready"]), waitTimeoutMs: 2000, maxRestarts: 2),
        "msg-processReady": ProcessReady(process: ProcessEntry(name: "web", session: 3, pid: 77, state: .ready, argv: ["httpd"],
                                                               restarts: 0, startedNs: 1, readyNs: 2, logEnd: 5)),
        "msg-processFailed": ProcessFailed(code: .processExitedBeforeReady, message: "exited", elapsedMs: 12, exited: .code(3),
                                           tail: Array("boom".utf8),
                                           process: ProcessEntry(name: "web", session: 3, pid: 77, state: .failed, argv: [],
                                                                 restarts: 0, startedNs: 1, exited: .code(3))),
        "msg-processList": ProcessList(name: "web"),
        "msg-processTable": ProcessTable(processes: []),
        "msg-processLogs": ProcessLogs(name: "web", from: 4096, follow: true),
        "msg-processLogPosition": ProcessLogPosition(offset: 4096, droppedBytes: 17),
        "msg-processSignal": ProcessSignal(name: "web", number: 15),
        "msg-processWait": ProcessWait(name: "web"),
        "msg-processEnded": ProcessEnded(process: ProcessEntry(name: "web", session: 3, pid: 77, state: .exited, argv: [],
                                                               restarts: 0, startedNs: 1, exited: .code(0))),
        "msg-processRemove": ProcessRemove(name: "web"),
        "msg-exposePort": ExposePort(guestPort: 8080, hostPort: 18080, hostAddress: "::1", name: "web", check: false),
        "msg-portExposed": PortExposed(port: PortInfo(guestPort: 8080, hostAddress: "127.0.0.1", hostPort: 18080)),
        "msg-unexposePort": UnexposePort(guestPort: 8080),
        "msg-listPorts": ListPorts(),
        "msg-portList": PortList(ports: [PortInfo(guestPort: 3000, hostAddress: "::1", hostPort: 3000, listening: false,
                                                  problem: "portInUse", connections: 2, refusals: 1, lastRefusal: "x")]),
        "msg-tunnelOpen": TunnelOpen(guestPort: 8080, request: .max, probe: true),
        "msg-tunnelOpened": TunnelOpened(address: "127.0.0.1:8080", listeners: ["[::]:8080"]),
    ].merging(fileMessages) { first, _ in first }

    static let fileMessages: [String: any Message] = [
        "msg-fsStat": FsStat(FileScope(path: "/etc/hostname"), follow: false),
        "msg-fsInfo": FsInfo(type: .symlink, size: 8, mode: 0o777, uid: 0, gid: 0, mtimeNs: 5, atimeNs: 6, ctimeNs: 7, ino: 99, nlink: 1,
                             target: "hostname"),
        "msg-fsList": FsList(FileScope(path: "/var"), recursive: true, limit: 10, cursor: [0, 1]),
        "msg-fsEntries": FsEntries(entries: [FileEntry(name: OSString(bytes: [0x63, 0x61, 0x66, 0xE9]), type: .file, size: 5, mode: 0o644,
                                                       mtimeNs: 1)], nextCursor: nil),
        "msg-fsMkdir": FsMkdir(FileScope(path: "/srv/app"), mode: 0o700, parents: true),
        "msg-fsRemove": FsRemove(FileScope(path: "/srv/old"), recursive: true),
        "msg-fsRename": FsRename(FileScope(path: "a", cwd: "/srv"), to: "b", overwrite: true),
        "msg-fsSetattr": FsSetattr(FileScope(path: "/srv/b"), mode: 0o600, uid: 1000),
        "msg-fsRead": FsRead(FileScope(path: "/var/log/app.log", user: "app"), offset: 1024, length: 4096, limit: 1 << 40),
        "msg-fsWrite": FsWrite(FileScope(path: "/srv/x"), mode: 0o644, uid: 1, gid: 2, ifAbsent: true, sha256: [UInt8](repeating: 0, count: 32)),
        "msg-fsArchive": FsArchive(FileScope(path: "/srv/app")),
        "msg-fsExtract": FsExtract(FileScope(path: "/srv/copy"), owners: true),
        "msg-fsWatch": FsWatch(FileScope(path: "/srv/app"), recursive: true, exclude: [".git"]),
        "msg-fsEvents": FsEvents(events: [FileEvent(type: .moveTo, path: "b", cookie: 7), FileEvent(type: .overflow, path: "")]),
        "msg-fsDone": FsDone(bytes: 3, sha256: [UInt8](repeating: 0, count: 32)),
        "msg-fsError": FsError(kind: .noSpace, op: "write", path: "/full/x", errno: 28, message: "no space"),
    ]

    @Test func swiftDecodesWhatCbor2Encoded() throws {
        let vectors = try Self.vectors()
        #expect(vectors.count >= 60)
        for vector in vectors {
            let value = try CBORDecoder.decode(vector.bytes)
            #expect(value.description == vector.diagnostic, "\(vector.name)")
        }
    }

    @Test func everyMessageKindDecodesFromCbor2Bytes() throws {
        let vectors = try Self.vectors().filter { $0.name.hasPrefix("msg-") }
        #expect(Set(vectors.map(\.name)) == Set(Self.expectedMessages.keys))
        var kinds = Set<FrameKind>()
        for vector in vectors {
            let expected = try #require(Self.expectedMessages[vector.name])
            func check<M: Message>(_ m: M) throws -> Bool { try M(cbor: vector.bytes) == m }
            #expect(try check(expected), "\(vector.name)")
            kinds.insert(type(of: expected).kind)
        }
        for kind in FrameKind.known where !kind.isData { #expect(kinds.contains(kind), "no cbor2 vector for \(kind)") }
    }

    /// A Python with cbor2 importable: Debian's python3-cbor2 lives under /usr/bin/python3,
    /// which is not always the first python3 on PATH.
    static func pythonWithCbor2() -> String? {
        for candidate in ["/usr/bin/python3", "/usr/local/bin/python3", "python3"] {
            if (try? runCommand(["/usr/bin/env", candidate, "-c", "import cbor2"]))?.status == 0 { return candidate }
        }
        return nil
    }

    @Test func cbor2DecodesWhatSwiftEncoded() throws {
        guard let python = Self.pythonWithCbor2() else {
            try Test.cancel("needs Python's cbor2 (apt-get install python3-cbor2 or pip install cbor2)")
        }
        var lines: [String] = []
        var values: [(String, CBORValue)] = []
        for vector in try Self.vectors() { values.append((vector.name, try CBORDecoder.decode(vector.bytes))) }
        for (i, message) in Samples.messages.enumerated() {
            values.append(("swift-msg-\(i)-\(type(of: message))", try CBORDecoder.decode(message.cborBytes)))
        }
        for n: Int64 in [0, 23, 24, 255, 256, 65535, 65536, 1 << 32, -1, -24, -25, .min, .max] {
            values.append(("swift-int-\(n)", .int(n)))
        }
        values.append(("swift-uint-max", .unsigned(.max)))
        values.append(("swift-nint-max", .negative(.max)))
        for (name, value) in values {
            let bytes = encoded(value)
            lines.append("\(name)\t\(bytes.map { String(format: "%02x", $0) }.joined())\t\(value.description)")
        }

        let process = try ChildProcess(["/usr/bin/env", python, Self.root.appendingPathComponent("scripts/cbor2-vectors.py").path, "check"],
                                       stdin: true)
        // Its output is read by ChildProcess's own threads, so a full pipe cannot deadlock this.
        process.writeStdin(lines.joined(separator: "\n") + "\n")
        process.closeStdin()
        let status = process.wait(timeout: 120)
        let reports = process.stdout.split(separator: "\n")
        #expect(reports.count == lines.count)
        for report in reports where !report.hasSuffix("\tok") { Issue.record("cbor2 disagrees: \(report)") }
        #expect(status == 0, "\(process.stderr)")
    }
}
