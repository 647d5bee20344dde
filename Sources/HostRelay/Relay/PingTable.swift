/// Pings waiting for the agent's pong: the relay's own (no client) and those it forwards for
/// clients, under nonces of its own.
struct PingTable {
    struct Pending {
        weak var client: ClientLink?
        var clientNonce: UInt64
    }

    private var pending: [UInt64: Pending] = [:]
    private var nextNonce: UInt64 = 1

    /// Files a ping and returns the nonce to send to the agent.
    mutating func add(client: ClientLink?, nonce: UInt64) -> UInt64 {
        let own = nextNonce
        nextNonce += 1
        pending[own] = Pending(client: client, clientNonce: nonce)
        return own
    }

    mutating func remove(_ nonce: UInt64) -> Pending? { pending.removeValue(forKey: nonce) }

    /// Forgets the clients' pings (they were answered with an error), keeping the relay's own.
    mutating func dropClients() { pending = pending.filter { $0.value.client == nil } }

    /// Forgets every ping; returns the clients that were waiting.
    mutating func removeAll() -> [ClientLink] {
        let clients = pending.values.compactMap(\.client)
        pending.removeAll()
        return clients
    }
}
