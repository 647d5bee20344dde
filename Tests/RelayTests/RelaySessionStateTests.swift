#if canImport(Glibc)
import Glibc
#endif
import Testing
import TetherPosix
import TetherProtocol
@testable import TetherRelay

/// A session's state as one value: what each state says about the agent id, the reader and
/// whether the session outlives its client; and the table's ids.
@Suite struct RelaySessionStateTests {
    func exec(_ number: UInt32, detach: Bool = false, client: ClientLink? = nil) -> RelaySession {
        let listing = RelaySession.Listing(argv: ["/bin/true"], tty: false, startedNs: 1, adopted: false)
        let reader: RelaySession.Reader = client.map { .client(.init(client: $0, clientID: 7, survivesClient: detach)) } ?? .relay
        return RelaySession(number: number, role: .exec(listing), state: .live(agentID: number, reader: reader))
    }

    func client() throws -> ClientLink {
        var fds: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0, &fds) == 0)
        close(fds[1])
        return ClientLink(socket: try FrameSocket(adopting: OwnedFD(adopting: fds[0])), loop: try EventLoop(), serial: 1)
    }

    @Test func anAttachedSessionOutlivesItsClientOnlyWhenDetachable() throws {
        let owner = try client()
        let kept = exec(1, detach: true, client: owner), killed = exec(2, client: owner)
        #expect(kept.survivesClient && kept.owner === owner && kept.clientID == 7)
        #expect(!killed.survivesClient)
        #expect(killed.info.detached == false && killed.info.attached)
        killed.setReader(.relay)
        #expect(killed.survivesClient && killed.owner == nil && killed.agentID == 2)
    }

    @Test func abandonedKeepsTheAgentIDAndHasNoReader() throws {
        let session = exec(3, client: try client())
        session.state = .abandoned(agentID: 3)
        #expect(session.isAbandoned && session.agentID == 3 && session.owner == nil && !session.survivesClient)
        session.setReader(.relay)  // nobody reads an abandoned session: no change
        #expect(session.isAbandoned)
        session.agentEnded()
        #expect(session.agentID == nil && !session.isAbandoned)
    }

    @Test func reattachingKeepsItsReaderAndMovesToANewAgentID() throws {
        let owner = try client()
        let session = exec(4)
        session.state = .reattaching(agentID: 4, reader: .relay)
        session.setReader(.client(.init(client: owner, clientID: 9, survivesClient: true)))
        #expect(session.isReattaching && session.owner === owner)
        session.agentMoved(to: 12)
        #expect(!session.isReattaching && session.agentID == 12 && session.owner === owner && session.clientID == 9)
    }

    @Test func idsAreFreeAsNumbersAndAgentIDsAndThePreferredOneIsKept() {
        var table = SessionTable()
        let first = table.allocateID()
        table.insert(exec(first))
        #expect(table.allocateID(preferring: first) != first)
        let preferred = table.allocateID(preferring: 40)
        #expect(preferred == 40)
        table.insert(exec(40))
        #expect(table.allocateID() == 41)
        #expect(table.listed.map(\.session) == [first, 40])
        table.remove(table.byNumber[first]!)
        #expect(table.listed.map(\.session) == [40] && table.byAgentID[first] == nil)
    }
}
