import TetherProtocol

/// Every session the relay holds, found by its agent id, by its number, or (for `logs`) by
/// the key its reader thread reports with; plus the finished detached sessions kept for an
/// `attach`, and the allocation of ids.
///
/// A session's number and its first agent id are the same id: free in both maps, so that
/// `tether ps` numbers and agent ids never collide. Touched only by the relay's loop thread.
struct SessionTable {
    private(set) var byAgentID: [UInt32: RelaySession] = [:]
    private(set) var byNumber: [UInt32: RelaySession] = [:]
    private(set) var logs: [UInt64: RelaySession] = [:]
    private var nextID: UInt32 = 1
    private var nextLogKey: UInt64 = 1
    /// Finished detached sessions waiting for an attach, oldest first (bounded by the relay).
    private(set) var finishedDetached: [UInt32] = []

    /// An id free both as a session number and as an agent id; `preferred` when it is free.
    mutating func allocateID(preferring preferred: UInt32? = nil) -> UInt32 {
        if let preferred, preferred != 0, byNumber[preferred] == nil, byAgentID[preferred] == nil {
            if preferred >= nextID { nextID = preferred == .max ? 1 : preferred + 1 }
            return preferred
        }
        while true {
            let id = nextID
            nextID = nextID == .max ? 1 : nextID + 1
            // Monotonic, so an id comes back only after 2^32 sessions, long after any frame
            // for its previous use could still be in flight.
            if byNumber[id] == nil && byAgentID[id] == nil { return id }
        }
    }

    mutating func allocateLogKey() -> UInt64 {
        defer { nextLogKey += 1 }
        return nextLogKey
    }

    /// Files the session under its agent id (if it has one) and, when listed, its number.
    mutating func insert(_ session: RelaySession) {
        if let agentID = session.agentID { byAgentID[agentID] = session }
        if session.number != 0 { byNumber[session.number] = session }
    }

    mutating func insertLogs(_ session: RelaySession, key: UInt64) { logs[key] = session }
    mutating func removeLogs(key: UInt64) { logs[key] = nil }

    /// The session is known under a new agent id too (re-attach after a detach).
    mutating func file(_ session: RelaySession, underAgentID id: UInt32) { byAgentID[id] = session }

    /// The agent id is done (END); the session may still wait for its reader.
    mutating func releaseAgentID(_ id: UInt32) { byAgentID[id] = nil }

    mutating func remove(_ session: RelaySession) {
        if let agentID = session.agentID, byAgentID[agentID] === session { byAgentID[agentID] = nil }
        if byNumber[session.number] === session { byNumber[session.number] = nil }
    }

    /// Every session that ends with the agent connection: those on it and the listed ones.
    var allForwarded: [RelaySession] {
        var sessions = Array(byAgentID.values)
        for session in byNumber.values where !sessions.contains(where: { $0 === session }) { sessions.append(session) }
        return sessions
    }

    /// Forgets every session of the agent connection (it dropped); `logs` readers stay.
    mutating func removeAllForwarded() {
        byAgentID.removeAll()
        byNumber.removeAll()
        finishedDetached.removeAll()
    }

    var listed: [SessionInfo] {
        byNumber.values.filter(\.isListed).sorted { $0.number < $1.number }.map(\.info)
    }

    mutating func keepFinished(_ number: UInt32) { finishedDetached.append(number) }
    mutating func forgetFinished(_ number: UInt32) { finishedDetached.removeAll { $0 == number } }

    /// Drops the oldest finished detached sessions beyond `limit` that nobody attached since.
    mutating func trimFinished(toAtMost limit: Int) {
        while finishedDetached.count > limit {
            let number = finishedDetached.removeFirst()
            if let old = byNumber[number], old.agentID == nil, old.owner == nil { remove(old) }
        }
    }
}
