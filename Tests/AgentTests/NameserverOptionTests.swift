import Testing
@testable import TetherAgent

/// `--nameserver ADDR`: what the host passes for an egress sandbox's /etc/resolv.conf.
struct NameserverOptionTests {
    @Test func addressesAreKeptInOrderAndAnythingElseIsRefused() throws {
        #expect(try AgentOptions(parsing: ["--nameserver", "10.0.2.3", "--nameserver=fd00::3"]).nameservers == ["10.0.2.3", "fd00::3"])
        #expect(try AgentOptions(parsing: []).nameservers.isEmpty)
        // It becomes a line of resolv.conf: nothing that could add another line or option.
        for bad in ["", "10.0.2.3\nsearch evil", "ns.example", "10.0.2.3 options", String(repeating: "1", count: 46)] {
            #expect(throws: (any Error).self, "\(bad)") { _ = try AgentOptions(parsing: ["--nameserver", bad]) }
        }
    }
}
