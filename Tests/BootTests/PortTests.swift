#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TestSupport
import TetherBoot
import TetherClient
import TetherProtocol
import Testing

/// Exposed ports end to end, as a user meets them: a real sandbox in the default network
/// mode (`none`: loopback only), busybox services in it, `tether port` and the library
/// through the sandbox's relay, and plain TCP clients on the host.
@Suite(.serialized) struct PortTests {
    let home = Fixtures.temporaryDirectory("ports")

    func tether(_ arguments: [String]) throws -> Fixtures.Output {
        try Fixtures.tether(arguments, home: home)
    }

    var sandboxes: Sandboxes { Fixtures.sandboxes(home: home) }

    /// Boots `name` (without options: the default network mode, none) and returns a client of
    /// its relay.
    func boot(_ name: String, _ options: [String] = []) async throws -> TetherClient {
        try Fixtures.requireRoot()
        let booted = try tether(["boot", "--rootfs", try Fixtures.busyboxRootfs(), "--name", name, "--ephemeral"] + options)
        try #require(booted.status == 0, "boot: \(booted.stderr)")
        let socket = sandboxes.home.sandbox(name).relaySocket.path
        return try await TetherClient.connect(to: "unix:" + socket)
    }

    func stop(_ name: String) {
        if sandboxes.entry(name).isLive { _ = try? sandboxes.stop(name, graceMs: 1_000) }
    }

    /// Runs a shell line in the sandbox and waits until something listens on each port.
    func serve(_ name: String, _ script: String, listeningOn ports: [UInt16]) throws {
        let wait = ports.map { "until netstat -ltn | grep -q ':\($0) '; do sleep 0.05; done" }.joined(separator: "; ")
        let result = try tether(["exec", "--sandbox", name, "--timeout", "20s", "--", "sh", "-c", script + "\n" + wait])
        try #require(result.status == 0, "serve: \(result.stderr)")
    }

    /// A static probe (Probes/NAME.c) copied into the sandbox's /tmp.
    func copyProbe(_ probe: String, into sandbox: String) throws -> String {
        let target = "/tmp/" + probe
        var environment = ProcessInfo.processInfo.environment
        environment["TETHER_HOME"] = home.path
        environment.removeValue(forKey: "TETHER_SOCKET")
        let copy = try Fixtures.run([Binaries.product("tether").path, "exec", "-i", "--sandbox", sandbox, "--", "sh", "-c",
                                     "cat > \(target) && chmod +x \(target)"],
                                    environment: environment, standardInput: try Fixtures.staticProbe(probe))
        try #require(copy.status == 0, "copying \(probe) into the sandbox: \(copy.stderr)")
        return target
    }

    @Test(.timeLimit(.minutes(5)))
    func busyboxHttpdInTheGuestIsFetchedFromTheHost() async throws {
        let client = try await boot("web")
        defer { stop("web") }
        try serve("web", "mkdir -p /tmp/www && echo hello from the guest > /tmp/www/index.html && httpd -p 127.0.0.1:8080 -h /tmp/www",
                  listeningOn: [8080])
        let exposed = try tether(["port", "expose", "--sandbox", "web", "8080", "--name", "site"])
        try #require(exposed.status == 0, "expose: \(exposed.stderr)")
        let endpoint = exposed.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(endpoint.hasPrefix("127.0.0.1:"), "expose printed \(exposed.stdout)")
        let port = try #require(UInt16(endpoint.split(separator: ":").last ?? ""))
        let reply = try HostTCP.exchange(.loopback4, port: port, send: Array("GET / HTTP/1.0\r\n\r\n".utf8))
        let text = String(decoding: reply, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 200 OK"), "reply: \(text)")
        #expect(text.hasSuffix("\r\n\r\nhello from the guest\n"), "reply: \(text)")
        let listed = try await client.ports.list()
        #expect(listed.map(\.guestPort) == [8080])
        #expect(listed.first?.name == "site")
        #expect(listed.first?.connections == 1)
        let table = try tether(["port", "ls", "--sandbox", "web"])
        #expect(table.stdout.contains("8080") && table.stdout.contains(endpoint) && table.stdout.contains("site"), "ls: \(table.stdout)")
    }

    @Test(.timeLimit(.minutes(5)))
    func servicesBoundToLoopbackFourLoopbackSixAndEveryAddressAreAllReachable() async throws {
        let client = try await boot("binds")
        defer { stop("binds") }
        try serve("binds", """
            for a in v4 v6 any; do mkdir -p /tmp/$a; echo bound $a > /tmp/$a/index.html; done
            httpd -p 127.0.0.1:7001 -h /tmp/v4; httpd -p '[::1]:7002' -h /tmp/v6; httpd -p 0.0.0.0:7003 -h /tmp/any
            """, listeningOn: [7001, 7002, 7003])
        for (guestPort, word) in [(7001, "v4"), (7002, "v6"), (7003, "any")] {
            // The host side on IPv6 for one of them: the host address is independent of the guest's.
            let hostAddress = guestPort == 7002 ? "::1" : "127.0.0.1"
            let port = try await client.ports.expose(guestPort: UInt32(guestPort), hostAddress: hostAddress)
            #expect(port.hostAddress == hostAddress)
            let reply = try HostTCP.exchange(guestPort == 7002 ? .loopback6 : .loopback4, port: port.hostPort,
                                             send: Array("GET / HTTP/1.0\r\n\r\n".utf8))
            #expect(String(decoding: reply, as: UTF8.self).hasSuffix("bound \(word)\n"), "guest port \(guestPort)")
        }
    }

    @Test(.timeLimit(.minutes(5)))
    func inEgressModeAServiceBoundOnlyToTheGuestsOwnAddressIsReachable() async throws {
        try Fixtures.requireRoot()
        try EgressNetworkTests.requireEgressPrograms()
        let client = try await boot("own", ["--network", "egress"])
        defer { stop("own") }
        // Bound to eth0's address alone: 127.0.0.1 and ::1 refuse, the guest's own address takes it.
        let address = try tether(["exec", "--sandbox", "own", "--", "sh", "-c",
                                  "ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(!address.isEmpty, "the guest has no IPv4 address on eth0")
        try serve("own", "mkdir -p /tmp/o && echo own address > /tmp/o/index.html && httpd -p \(address):8090 -h /tmp/o",
                  listeningOn: [8090])
        let port = try await client.ports.expose(guestPort: 8090)
        let reply = try HostTCP.exchange(.loopback4, port: port.hostPort, send: Array("GET / HTTP/1.0\r\n\r\n".utf8))
        #expect(String(decoding: reply, as: UTF8.self).hasSuffix("own address\n"))
    }

    @Test(.timeLimit(.minutes(5)))
    func aHundredConcurrentConnectionsEachGetTheirOwnBytes() async throws {
        let client = try await boot("many")
        defer { stop("many") }
        let echo = try copyProbe("echo-server", into: "many")
        try serve("many", "\(echo) 0.0.0.0 7100 </dev/null >/dev/null 2>&1", listeningOn: [7100])
        let port = try await client.ports.expose(guestPort: 7100)
        var sockets: [CInt] = []
        defer { for fd in sockets { close(fd) } }
        var payloads: [[UInt8]] = []
        for index in 0..<100 {
            let fd = try HostTCP.connect(.loopback4, port: port.hostPort)
            sockets.append(fd)
            // Distinct bytes per connection: its number, repeated, then a line of its own.
            let payload = Array(String(repeating: "connection \(index);", count: 400).utf8)
            payloads.append(payload)
        }
        // All hundred open at once; each sends, shuts its writing half, then reads its echo.
        for (fd, payload) in zip(sockets, payloads) {
            try HostTCP.writeAll(fd, payload)
            shutdown(fd, CInt(SHUT_WR))
        }
        for (index, fd) in sockets.enumerated() {
            let echoed = try HostTCP.readToEnd(fd)
            let same = echoed == payloads[index]
            #expect(same, "connection \(index): \(echoed.count) bytes back of \(payloads[index].count)")
        }
        let listed = try await client.ports.list()
        #expect(listed.first?.connections == 100)
        #expect(listed.first?.refusals == 0)
    }

    @Test(.timeLimit(.minutes(5)))
    func halfCloseReachesTheGuestAndTheReplyStillArrives() async throws {
        let client = try await boot("half")
        defer { stop("half") }
        // wc -c answers only once it read EOF: the reply proves the shutdown(SHUT_WR) crossed
        // both hops, and that the other direction stayed open after it.
        try serve("half", "nc -ll -p 7200 -e wc -c </dev/null >/dev/null 2>&1 &", listeningOn: [7200])
        let port = try await client.ports.expose(guestPort: 7200)
        let reply = try HostTCP.exchange(.loopback4, port: port.hostPort, send: [UInt8](repeating: 0x61, count: 200_000))
        #expect(String(decoding: reply, as: UTF8.self).trimmingCharacters(in: .whitespaces) == "200000\n")
    }

    @Test(.timeLimit(.minutes(5)))
    func everyPortErrorIsTyped() async throws {
        let client = try await boot("errors")
        defer { stop("errors") }
        try serve("errors", "mkdir -p /tmp/w; httpd -p 127.0.0.1:8080 -h /tmp/w", listeningOn: [8080])

        func code(_ body: () async throws -> Void) async -> TetherError? {
            do { try await body() } catch { return error as? TetherError }
            return nil
        }
        // invalidPort: 0, above 65535, with the reason.
        let zero = await code { _ = try await client.ports.expose(guestPort: 0) }
        #expect(zero?.code == .remote(.invalidPort))
        #expect(zero?.message.contains("port 0") == true, "\(String(describing: zero))")
        let huge = await code { _ = try await client.ports.expose(guestPort: 70000) }
        #expect(huge?.code == .remote(.invalidPort))
        #expect(huge?.message.contains("65535") == true)
        // serviceNotResponding: nothing on 9090; the hint names where things do listen.
        let silent = await code { _ = try await client.ports.expose(guestPort: 9090) }
        #expect(silent?.code == .remote(.serviceNotResponding))
        #expect(silent?.message.contains("127.0.0.1, ::1 or 0.0.0.0") == true)
        #expect(silent?.message.contains("127.0.0.1:8080") == true, "\(String(describing: silent?.message))")
        // portAlreadyExposed names the existing host address and label.
        let first = try await client.ports.expose(guestPort: 8080, name: "web")
        let again = await code { _ = try await client.ports.expose(guestPort: 8080) }
        #expect(again?.code == .remote(.portAlreadyExposed))
        #expect(again?.message.contains(first.hostEndpoint) == true && again?.message.contains("web") == true)
        // portNotExposed.
        let missing = await code { try await client.ports.unexpose(guestPort: 8081) }
        #expect(missing?.code == .remote(.portNotExposed))
        // portInUse: the host port is taken by someone else on the host.
        let squatter = try HostTCP.listen(.loopback4)
        defer { close(squatter.fd) }
        try serve("errors", "mkdir -p /tmp/x; httpd -p 127.0.0.1:8082 -h /tmp/x", listeningOn: [8082])
        let taken = await code { _ = try await client.ports.expose(guestPort: 8082, hostPort: UInt32(squatter.port)) }
        #expect(taken?.code == .remote(.portInUse))
        // connectionRefused, for one tunnelled connection: exposed without the check, nothing
        // listens; the host client is reset and the port's record says what the agent tried.
        let blind = try await client.ports.expose(guestPort: 9091, check: false)
        // The reset can come before the connect is seen complete (its SO_ERROR is then
        // ECONNRESET) or after (the first read fails): either way nothing is read.
        do {
            let fd = try HostTCP.connect(.loopback4, port: blind.hostPort)
            let afterRefusal = try? HostTCP.readToEnd(fd)
            #expect(afterRefusal == nil, "a refused connection is reset, as one to a port nobody listens on")
            close(fd)
        } catch {
            #expect("\(error)".contains("ECONNRESET"), "\(error)")
        }
        var record: PortInfo?
        for _ in 0..<100 {
            record = try await client.ports.list().first { $0.guestPort == 9091 }
            if record?.refusals == 1 { break }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        #expect(record?.refusals == 1)
        let refusal = record?.lastRefusal ?? ""
        #expect(refusal.hasPrefix("connectionRefused:"), "\(refusal)")
        #expect(refusal.contains("127.0.0.1:9091") && refusal.contains("[::1]:9091"), "\(refusal)")
        // Unexposed: the host port stops taking connections.
        try await client.ports.unexpose(guestPort: 8080)
        #expect(throws: (any Error).self) { _ = try HostTCP.connect(.loopback4, port: first.hostPort) }
        #expect(try await client.ports.list().map(\.guestPort) == [9091])
    }

    @Test(.timeLimit(.minutes(5)))
    func portsComeBackAfterTheRelayIsKilledAndEndWithTheSandbox() async throws {
        let client = try await boot("lasting")
        defer { stop("lasting") }
        try serve("lasting", "mkdir -p /tmp/w && echo still here > /tmp/w/index.html && httpd -p 0.0.0.0:8080 -h /tmp/w",
                  listeningOn: [8080])
        let port = try await client.ports.expose(guestPort: 8080, name: "kept")
        client.close()
        let relayPid = try #require(sandboxes.entry("lasting").state?.relayPid)
        kill(relayPid, SIGKILL)
        // The supervisor starts a new relay, which reads ports.json and listens again.
        var reply: [UInt8] = []
        for _ in 0..<200 {
            if let bytes = try? HostTCP.exchange(.loopback4, port: port.hostPort, send: Array("GET / HTTP/1.0\r\n\r\n".utf8)),
               !bytes.isEmpty {
                reply = bytes
                break
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        #expect(String(decoding: reply, as: UTF8.self).hasSuffix("still here\n"))
        // The supervisor records the new relay once it serves clients.
        var newRelay = sandboxes.entry("lasting").state?.relayPid
        for _ in 0..<100 where newRelay == nil || newRelay == relayPid {
            try await Task.sleep(nanoseconds: 50_000_000)
            newRelay = sandboxes.entry("lasting").state?.relayPid
        }
        #expect(newRelay != nil && newRelay != relayPid)
        let listed = try await TetherClient.connect(to: "unix:" + sandboxes.home.sandbox("lasting").relaySocket.path).ports.list()
        #expect(listed == [PortInfo(guestPort: 8080, hostAddress: "127.0.0.1", hostPort: port.hostPort, name: "kept",
                                    connections: 1)])
        // The sandbox ends: so do its ports, on the host and on disk.
        _ = try sandboxes.stop("lasting", graceMs: 1_000)
        #expect(throws: (any Error).self) { _ = try HostTCP.connect(.loopback4, port: port.hostPort) }
        #expect(!FileManager.default.fileExists(atPath: sandboxes.home.sandbox("lasting").ports.path))
    }
}
