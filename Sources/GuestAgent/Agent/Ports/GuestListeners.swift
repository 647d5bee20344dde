#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix

/// What listens for TCP in the guest, read from /proc/net/tcp and /proc/net/tcp6: the kernel's
/// view of the agent's own network namespace, so a service in it shows up whatever it was
/// started by, and nothing is connected to just to look.
enum GuestListeners {
    struct Listener: Hashable {
        var address: IPAddress
        var port: UInt16

        var endpoint: String { address.endpoint(port: port) }
        /// 0.0.0.0 or ::, which take connections to every local address.
        var isWildcard: Bool {
            switch address {
            case .v4(0, 0, 0, 0): true
            case .v6(let bytes): bytes.allSatisfy { $0 == 0 }
            default: false
            }
        }
    }

    /// The state column's value for a listening socket (TCP_LISTEN).
    static let listenState = "0A"

    /// Every listening socket, IPv4 then IPv6. A file that cannot be read (no IPv6 in the
    /// kernel, /proc not mounted) adds nothing.
    static func current() -> [Listener] {
        var listeners: [Listener] = []
        for (path, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
            guard let bytes = try? FileIO.readFile(path, limit: 8 << 20) else { continue }
            listeners += parse(String(decoding: bytes, as: UTF8.self), v6: v6)
        }
        return listeners
    }

    /// The listening sockets in one /proc/net/tcp{,6} text. Lines that do not parse are
    /// skipped: the format is the kernel's, but a line cut short must not stop the agent.
    static func parse(_ text: String, v6: Bool) -> [Listener] {
        var listeners: [Listener] = []
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 3, fields[3] == listenState else { continue }
            let local = fields[1].split(separator: ":")
            guard local.count == 2, let port = UInt16(local[1], radix: 16),
                  let address = address(hex: local[0], v6: v6) else { continue }
            listeners.append(Listener(address: address, port: port))
        }
        return listeners
    }

    /// The kernel prints the address as 32-bit words in the machine's byte order (%08X of
    /// s_addr, or of each of s6_addr32's four words).
    static func address(hex: Substring, v6: Bool) -> IPAddress? {
        let words = v6 ? 4 : 1
        guard hex.count == 8 * words else { return nil }
        var bytes: [UInt8] = []
        var index = hex.startIndex
        for _ in 0..<words {
            let next = hex.index(index, offsetBy: 8)
            guard let word = UInt32(hex[index..<next], radix: 16) else { return nil }
            withUnsafeBytes(of: word) { bytes += $0 }   // native order: as the kernel held it
            index = next
        }
        return v6 ? .v6(bytes) : .v4(bytes[0], bytes[1], bytes[2], bytes[3])
    }
}

/// Where the agent connects for a tunnelled connection, in order: 127.0.0.1, ::1, then the
/// guest's own interface addresses (a service bound to one of them only).
enum GuestAddresses {
    static func connectOrder() -> [IPAddress] {
        var order: [IPAddress] = [.loopback4, .loopback6]
        for address in interfaceAddresses() where !order.contains(address) { order.append(address) }
        return order
    }

    /// Every IPv4 and IPv6 address on an interface, link-local IPv6 left out (it needs a
    /// scope id to connect to). C: getifaddrs(3)
    static func interfaceAddresses() -> [IPAddress] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(first) }
        var addresses: [IPAddress] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let socketAddress = entry.pointee.ifa_addr else { continue }
            switch CInt(socketAddress.pointee.sa_family) {
            case AF_INET:
                let bytes = socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                    withUnsafeBytes(of: pointer.pointee.sin_addr) { Array($0) }
                }
                addresses.append(.v4(bytes[0], bytes[1], bytes[2], bytes[3]))
            case AF_INET6:
                let bytes = socketAddress.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                    withUnsafeBytes(of: pointer.pointee.sin6_addr) { Array($0) }
                }
                if bytes[0] == 0xFE && bytes[1] & 0xC0 == 0x80 { continue }
                addresses.append(.v6(bytes))
            default:
                continue
            }
        }
        return addresses
    }

    /// Whether a listener takes connections the agent makes to one of `order`.
    static func reaches(_ listener: GuestListeners.Listener, order: [IPAddress]) -> Bool {
        listener.isWildcard || order.contains(listener.address)
    }
}
