import Testing
import TetherPosix
@testable import TetherAgent

/// What the agent reads from /proc/net/tcp{,6} to answer a probe, and the hint it writes.
@Suite struct GuestListenersTests {
    // Lines as the kernel writes them (x86_64, little-endian): a listener on 127.0.0.1:8080,
    // one on 0.0.0.0:22, an established connection (state 01) that must not count.
    static let tcp = """
          sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
           0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
           1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1235 1 0000000000000000 100 0 0 10 0
           2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1236 1 0000000000000000 20 4 30 10 -1
           3: garbage
        """
    // ::1 port 3000 and :: port 8443.
    static let tcp6 = """
          sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
           0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
           1: 00000000000000000000000000000000:20FB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 100 0 0 10 0
        """

    @Test func listeningSocketsAreReadWithTheirAddressesAndPorts() {
        let v4 = GuestListeners.parse(Self.tcp, v6: false)
        #expect(v4.map(\.endpoint) == ["127.0.0.1:8080", "0.0.0.0:22"])
        #expect(v4.map(\.isWildcard) == [false, true])
        let v6 = GuestListeners.parse(Self.tcp6, v6: true)
        #expect(v6.map(\.endpoint) == ["[::1]:3000", "[::]:8443"])
        #expect(v6.map(\.isWildcard) == [false, true])
    }

    @Test func aListenerOnAnotherAddressIsNamedInTheHint() {
        let other = GuestListeners.Listener(address: .v4(10, 0, 2, 15), port: 5000)
        #expect(!GuestAddresses.reaches(other, order: [.loopback4, .loopback6]))
        let hint = TunnelRequest.nothingListens(port: 5000, onPort: [other],
                                                all: GuestListeners.parse(Self.tcp, v6: false) + [other])
        #expect(hint.contains("nothing listens on guest port 5000"))
        #expect(hint.contains("a listener on 10.0.2.15:5000 is bound to an address the agent does not connect to"))
        #expect(hint.contains("start the service bound to 127.0.0.1, ::1 or 0.0.0.0 on port 5000"))
        #expect(hint.contains("listening in the guest: 0.0.0.0:22, 10.0.2.15:5000, 127.0.0.1:8080"))
    }

    @Test func theAgentTriesLoopbackFirstThenItsOwnAddresses() {
        let order = GuestAddresses.connectOrder()
        #expect(Array(order.prefix(2)) == [.loopback4, .loopback6])
        #expect(Set(order).count == order.count)
    }
}
