/// The nftables rules of an `egress` sandbox's network namespace: every destination a guest
/// could use to reach the host or its neighbours is refused unless `--allow-net` names it.
///
/// They are installed (by the host's `nft`) in a network namespace owned by a user namespace in
/// which the guest's root has no capability (SECURITY.md, "network egress"), so nothing in the
/// guest can flush them, and the guest's packets meet them before they reach pasta, which turns
/// them into sockets of the host. A refused connection fails at once with EHOSTUNREACH (an ICMP
/// "administratively prohibited" the rule sends back).
public struct EgressRules: Sendable {
    /// The nftables table (family inet: one table for IPv4 and IPv6).
    public static let table = "tether_egress"

    /// IPv4 destinations refused by default: "this network" (0.0.0.0 is the host itself),
    /// private (RFC 1918), shared (RFC 6598, where some clouds put their metadata service),
    /// loopback, link-local (169.254.169.254 is the cloud metadata address), multicast, reserved
    /// and broadcast.
    public static let blockedIPv4 = ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
                                     "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/3"]
    /// IPv6: unspecified and loopback, IPv4-mapped (a host socket given ::ffff:127.0.0.1
    /// connects to the IPv4 loopback), local-use NAT64, unique local (fc00::/7, fd00:ec2::254 is
    /// a metadata address), link-local and multicast.
    public static let blockedIPv6 = ["::/127", "::ffff:0:0/96", "64:ff9b:1::/48", "fc00::/7", "fe80::/10", "ff00::/8"]

    public var allowed: [NetworkRange]
    /// The address pasta answers DNS on (forwarded to the host's resolver): port 53 only.
    public var nameserver: String

    public init(allowed: [NetworkRange], nameserver: String) {
        self.allowed = allowed
        self.nameserver = nameserver
    }

    /// The ruleset, for `nft -f`.
    public var text: String {
        func set(_ name: String, _ type: String, _ elements: [String]) -> String {
            "\tset \(name) { type \(type); flags interval; " + (elements.isEmpty ? "" : "elements = { \(elements.joined(separator: ", ")) } ") + "}\n"
        }
        let allowed4 = allowed.filter { $0.family == .v4 }.map(\.description)
        let allowed6 = allowed.filter { $0.family == .v6 }.map(\.description)
        return "table inet \(Self.table) {\n"
            + set("allowed4", "ipv4_addr", allowed4)
            + set("allowed6", "ipv6_addr", allowed6)
            + set("blocked4", "ipv4_addr", Self.blockedIPv4)
            + set("blocked6", "ipv6_addr", Self.blockedIPv6)
            + """
            \tchain output {
            \t\ttype filter hook output priority filter; policy accept;
            \t\toifname "lo" accept
            \t\tip daddr \(nameserver) udp dport 53 accept
            \t\tip daddr \(nameserver) tcp dport 53 accept
            \t\tip daddr @allowed4 accept
            \t\tip6 daddr @allowed6 accept
            \t\tip daddr @blocked4 reject with icmpx type admin-prohibited
            \t\tip6 daddr @blocked6 reject with icmpx type admin-prohibited
            \t}
            }

            """
    }
}
