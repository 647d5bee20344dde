import TetherProtocol

extension TetherClient {
    /// Exposed ports of the relay's sandbox: `client.ports.expose(guestPort: 8080)`.
    public var ports: Ports { Ports(client: self) }

    /// Guest TCP ports reachable on host addresses through the relay (docs/PROTOCOL.md,
    /// "Exposed ports"). Failures are `TetherError`s whose code is the relay's:
    /// `remote(.invalidPort)`, `.portAlreadyExposed`, `.portNotExposed`, `.portInUse`,
    /// `.serviceNotResponding`.
    public struct Ports: Sendable {
        let client: TetherClient

        /// Listens on `hostAddress:hostPort` (127.0.0.1 and a port the kernel picks by
        /// default) and carries each connection to the guest's `guestPort`. With `check`
        /// (the default) the relay first asks the agent whether anything listens there.
        /// Returns where it listens (`PortInfo.hostEndpoint`).
        @discardableResult
        public func expose(guestPort: UInt32, hostPort: UInt32? = nil, hostAddress: String? = nil, name: String? = nil,
                           check: Bool = true) async throws(TetherError) -> PortInfo {
            let request = ExposePort(guestPort: guestPort, hostPort: hostPort, hostAddress: hostAddress, name: name, check: check)
            var context = ["guestPort": String(guestPort)]
            if let hostPort { context["hostPort"] = String(hostPort) }
            if let hostAddress { context["hostAddr"] = hostAddress }
            let reply = try await client.request(kind: .exposePort, payload: request.cborBytes, operation: "exposePort", context: context)
            guard let reply, reply.kind == .portExposed else {
                throw TetherError(.protocolError, "expected `portExposed`", operation: "exposePort", context: context)
            }
            do { return try reply.decode(PortExposed.self).port } catch {
                throw TetherError(.protocolError, "portExposed: \(error.description)", operation: "exposePort", context: context)
            }
        }

        /// Stops listening for the guest port (connections already carried go on).
        public func unexpose(guestPort: UInt32) async throws(TetherError) {
            _ = try await client.request(kind: .unexposePort, payload: UnexposePort(guestPort: guestPort).cborBytes,
                                         operation: "unexposePort", context: ["guestPort": String(guestPort)])
        }

        /// Every exposed port, by guest port.
        public func list() async throws(TetherError) -> [PortInfo] {
            let reply = try await client.request(kind: .listPorts, payload: ListPorts().cborBytes, operation: "listPorts", context: [:])
            guard let reply, reply.kind == .portList else {
                throw TetherError(.protocolError, "expected `portList`", operation: "listPorts")
            }
            do { return try reply.decode(PortList.self).ports } catch {
                throw TetherError(.protocolError, "portList: \(error.description)", operation: "listPorts")
            }
        }
    }
}
