#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TestSupport
import TetherBoot
import Testing

/// What the egress tests need from the host: a listener on any IPv4 address, the host's own
/// non-loopback address, private addresses to aim at (a dummy interface), a name the host's
/// resolver answers, and the host's nft inside a guest tree.
enum EgressSupport {
    /// A nonblocking TCP listener on `address` (port chosen by the kernel). On 127.0.0.1 it is
    /// also the host-only service the confinement tests check a guest cannot reach.
    final class Listener {
        let fd: CInt
        let address: String
        let port: UInt16

        init(_ address: String) throws {
            let fd = socket(AF_INET, CInt(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue | SOCK_NONBLOCK.rawValue), 0)
            guard fd >= 0 else { throw FixtureError.failed("socket: \(errno)") }
            var one: CInt = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
            var socketAddress = sockaddr_in()
            socketAddress.sin_family = sa_family_t(AF_INET)
            socketAddress.sin_addr.s_addr = inet_addr(address)
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &socketAddress) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                    bind(fd, generic, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, generic, &length) == 0
                }
            }
            guard bound else {
                let error = errno
                close(fd)
                throw FixtureError.failed("listening on \(address): errno \(error)")
            }
            self.fd = fd
            self.address = address
            port = UInt16(bigEndian: socketAddress.sin_port)
        }

        deinit { close(fd) }

        /// Whether a connection is waiting; it is accepted and closed.
        func acceptedAConnection() -> Bool {
            let connection = accept(fd, nil, nil)
            guard connection >= 0 else { return false }
            close(connection)
            return true
        }
    }

    /// `ip ARGS...` on the host; its output.
    @discardableResult
    static func ip(_ arguments: [String]) throws -> Fixtures.Output {
        try Fixtures.run(["/usr/sbin/ip"] + arguments)
    }

    /// The host's first global IPv4 address that is not on `excluding`.
    static func hostAddress(excluding interface: String? = nil) throws -> String? {
        let output = try ip(["-4", "-o", "addr", "show", "scope", "global"]).stdout
        for line in output.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 3, fields[2] == "inet", fields[1] != "lo", String(fields[1]) != interface else { continue }
            return String(fields[3].split(separator: "/")[0])
        }
        return nil
    }

    /// Two addresses of a private range on the host, for the guest to aim at: on a dummy
    /// interface of their own, or (where the kernel has no dummy driver, as here) as /32s on
    /// the host's lo. `remove()` takes them away again.
    struct PrivateAddresses {
        let interface: String
        let ownInterface: Bool
        let addresses = ["10.213.77.1", "10.213.77.2"]

        static func make() -> PrivateAddresses? {
            let dummy = "tegr\(getpid() % 100_000)"
            let own = (try? ip(["link", "add", dummy, "type", "dummy"]).status) == 0
            let made = PrivateAddresses(interface: own ? dummy : "lo", ownInterface: own)
            for address in made.addresses {
                guard (try? ip(["addr", "add", address + "/32", "dev", made.interface]).status) == 0 else {
                    made.remove()
                    return nil
                }
            }
            if own { _ = try? ip(["link", "set", dummy, "up"]) }
            return made
        }

        func remove() {
            if ownInterface {
                _ = try? ip(["link", "del", interface])
            } else {
                for address in addresses { _ = try? ip(["addr", "del", address + "/32", "dev", interface]) }
            }
        }
    }

    /// The host's first resolver (/etc/resolv.conf), as pasta forwards to it.
    static func hostResolver() -> String? {
        guard let text = try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            if words.count >= 2, words[0] == "nameserver", !words[1].contains(":") { return String(words[1]) }
        }
        return nil
    }

    /// The first IPv4 address `server` gives for `name` (one UDP query, 3 s), or nil.
    static func resolve(_ name: String, server: String) -> String? {
        var query: [UInt8] = [0x54, 0x45, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        for label in name.split(separator: ".") { query += [UInt8(label.utf8.count)] + Array(label.utf8) }
        query += [0, 0, 1, 0, 1]
        let fd = socket(AF_INET, CInt(SOCK_DGRAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 3, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(53).bigEndian
        address.sin_addr.s_addr = inet_addr(server)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, query, query.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard sent == query.count else { return nil }
        var reply = [UInt8](repeating: 0, count: 512)
        let n = recv(fd, &reply, reply.count, 0)
        // An answer count above 0 and an A record last (a plain reply to one A question).
        guard n > 16, Int(reply[6]) << 8 | Int(reply[7]) > 0 else { return nil }
        return reply[(n - 4)..<n].map(String.init).joined(separator: ".")
    }

    /// A name the host's resolver answers, with its address; nil where it answers none (no
    /// upstream: the DNS check is then skipped with a message).
    static func resolvableName() -> (name: String, address: String)? {
        guard let server = hostResolver() else { return nil }
        for name in ["deb.debian.org", "example.com", "debian.org"] {
            if let address = resolve(name, server: server) { return (name, address) }
        }
        return nil
    }

    /// Copies the host's nft with the libraries it loads into `rootfs` (same paths), so guest
    /// root can run the real `nft flush ruleset`.
    static func installNft(into rootfs: String) throws -> Bool {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft") else { return false }
        let ldd = try Fixtures.run(["/usr/bin/ldd", "/usr/sbin/nft"])
        guard ldd.status == 0 else { return false }
        var files = ["/usr/sbin/nft"]
        for line in ldd.stdout.split(separator: "\n") {
            if let path = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).first(where: { $0.hasPrefix("/") }) { files.append(String(path)) }
        }
        for file in files {
            let copy = try Fixtures.run(["/bin/cp", "-L", "--parents", file, rootfs])
            guard copy.status == 0 else { throw FixtureError.failed("cp \(file) into \(rootfs): \(copy.stderr)") }
        }
        return true
    }
}
