import TetherBoot
import Testing

/// `--allow-net` ranges and the nftables rules built from them, without booting anything.
struct EgressRulesTests {
    @Test func rangesParseAndRefuseWhatIsNotARange() throws {
        #expect(try NetworkRange(parsing: "10.0.0.0/8").description == "10.0.0.0/8")
        #expect(try NetworkRange(parsing: "192.0.2.7").description == "192.0.2.7/32")
        #expect(try NetworkRange(parsing: "fd00::/8").description == "fd00::/8")
        #expect(try NetworkRange(parsing: "::1").description == "::1/128")
        for bad in ["10.1.2.3/8", "10.0.0.0/33", "10.0.0.0/", "10.0.0/8", "example.com", "", "fd00::1/8", "10.0.0.0/-1", "1.2.3.4/٣"] {
            #expect(throws: NetworkRange.ParseError.self, "\(bad)") { _ = try NetworkRange(parsing: bad) }
        }
        let error = try #require(throws: NetworkRange.ParseError.self) { _ = try NetworkRange(parsing: "10.1.2.3/8") }
        #expect(error.description.contains("10.0.0.0"), "the error names the range that was probably meant")
    }

    @Test func containsIsByPrefix() throws {
        let range = try NetworkRange(parsing: "127.0.0.0/8")
        #expect(range.contains("127.0.0.1") && range.contains("127.255.0.9"))
        #expect(!range.contains("128.0.0.1") && !range.contains("::1"))
        #expect(try NetworkRange(parsing: "0.0.0.0/0").contains("203.0.113.9"))
    }

    @Test func rulesRefuseTheHostsRangesAndAcceptWhatIsAllowedFirst() throws {
        let rules = EgressRules(allowed: [try NetworkRange(parsing: "10.9.0.0/16"), try NetworkRange(parsing: "fd00:1::/32")],
                                nameserver: "10.0.2.3").text
        for range in ["127.0.0.0/8", "169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "::ffff:0:0/96", "fe80::/10"] {
            #expect(rules.contains(range), "\(range) is not refused")
        }
        #expect(rules.contains("elements = { 10.9.0.0/16 }") && rules.contains("elements = { fd00:1::/32 }"))
        // Accepts come before rejects: an allowed range inside a refused one is reachable.
        let allow = try #require(rules.range(of: "ip daddr @allowed4 accept"))
        let reject = try #require(rules.range(of: "ip daddr @blocked4 reject"))
        #expect(allow.lowerBound < reject.lowerBound)
        #expect(rules.contains("ip daddr 10.0.2.3 udp dport 53 accept"))
    }
}
