import TetherSeccomp

/// The relay's seccomp self-confinement (SECCOMP.md, "relay"): installed once the listening
/// socket, the agent connection and exec.log are open, on every thread of the process.
///
/// The relay decodes frames from an untrusted guest; if that parsing ever goes wrong, the
/// filter is what stands between a compromised relay and the host: no execve, no new
/// processes, no sockets but AF_UNIX/AF_VSOCK, no mount/ptrace/bpf. The calls only an
/// attacker would make end the process with SIGSYS after one line on stderr naming the call.
public enum RelayConfinement {
    /// Loads `SeccompPolicy.relay` with the SIGSYS reporter. Irreversible.
    public static func apply() throws(SeccompError) {
        let filter = try SeccompFilter(.relay)
        try filter.reportTraps(prefix: "tether relay")
        try filter.load()
    }
}
