#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix

extension Boot {
    /// /etc/resolv.conf naming `nameservers` (the host's `--network egress` passes the address
    /// its network component forwards DNS from). A link there (systemd-resolved's stub) is
    /// replaced by the file. Nothing to do without nameservers; a failure is logged, not fatal:
    /// the sandbox is still usable by address.
    static func writeResolvConf(_ nameservers: [String]) {
        guard !nameservers.isEmpty else { return }
        let path = "/etc/resolv.conf"
        let text = "# written by tether-agent for the sandbox's network\n" + nameservers.map { "nameserver \($0)\n" }.joined()
        _ = unlink(path)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else {
            Log.warning("cannot write \(path): \(Errno.current)")
            return
        }
        let file = OwnedFD(adopting: fd)
        do { try FileIO.writeAll(file.raw, Array(text.utf8)) } catch { Log.warning("cannot write \(path): \(error)") }
    }
}
