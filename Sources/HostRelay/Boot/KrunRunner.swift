#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CKrun
import Foundation
import TetherPosix

/// The krun backend's VMM process (`tether-sandbox krun DIR`): loads libkrun, configures one
/// context and calls krun_start_enter, which on success becomes the VM and never returns (libkrun
/// `_exit`s with the guest's exit code when it stops). One context per process, as libkrun
/// wants (notes §1.2); the supervisor runs this as its child and is told the outcome by the exit
/// status and `boot-error.json`.
public enum KrunRunner {
    /// Configures and enters the VM. Returns only on failure, with what to write to
    /// `boot-error.json`.
    public static func run(config: SandboxConfig, paths: SandboxPaths) -> BootFailure {
        let library: KrunLibrary
        do {
            library = try KrunLibrary.load(explicitPath: config.krunLibrary)
        } catch {
            return error.bootFailure
        }
        do {
            try configureAndEnter(library, config: config, paths: paths)
        } catch {
            return error
        }
        return BootFailure(stage: .krunConfig, errno: 0, message: "krun_start_enter returned without an error")
    }

    /// The calls, in the order notes/libkrun.md prescribes. Throws the first failure.
    static func configureAndEnter(_ krun: KrunLibrary, config: SandboxConfig, paths: SandboxPaths) throws(BootFailure) {
        func check(_ rc: Int32, _ call: String) throws(BootFailure) -> UInt32 {
            guard rc >= 0 else {
                throw BootFailure(stage: .krunConfig, errno: -rc, message: "\(call) failed: \(Errno(rawValue: -rc))")
            }
            return UInt32(rc)
        }

        let ctx = try check(krun.createContext(), "krun_create_ctx()")
        let cpus = config.cpus ?? SandboxConfig.defaultKrunCPUs
        let memory = config.memoryMiB ?? SandboxConfig.defaultKrunMemoryMiB
        guard (1...255).contains(cpus) else {
            // num_vcpus is a u8 in libkrun's API.
            throw BootFailure(stage: .krunConfig, errno: EINVAL, message: "--cpus \(cpus): libkrun takes 1 to 255 vCPUs")
        }
        _ = try check(krun.setVMConfig(ctx, UInt8(cpus), UInt32(clamping: memory)),
                      "krun_set_vm_config(\(ctx), \(cpus), \(memory))")

        if let problem = config.networkProblem { throw problem }
        if config.network == .host {
            guard let setPortMap = krun.setPortMap else {
                throw BootFailure(stage: .krunLoad, errno: ENOSYS, message: "\(krun.path) has no krun_set_port_map: --network host would expose every guest port")
            }
            // TSI without a port map exposes every port the guest listens on, on the host
            // (notes §1.3, krun_set_port_map): an empty map exposes none. Ports the user asks
            // for are carried by the relay's tunnels instead.
            let empty: [UnsafePointer<CChar>?] = [nil]
            _ = try check(empty.withUnsafeBufferPointer { setPortMap(ctx, $0.baseAddress) }, "krun_set_port_map(\(ctx), [])")
        }
        if config.network == .none {
            // Plain vsock without TSI: the guest gets no network through the host (v1.17.0).
            guard let disable = krun.disableImplicitVsock, let add = krun.addVsock else {
                throw BootFailure(stage: .krunLoad, errno: ENOSYS,
                                  message: "--network none needs krun_disable_implicit_vsock and krun_add_vsock (libkrun 1.17.0)",
                                  hint: "update libkrun, or boot with --network host")
            }
            _ = try check(disable(ctx), "krun_disable_implicit_vsock(\(ctx))")
            _ = try check(add(ctx, 0), "krun_add_vsock(\(ctx), 0)")
        }

        _ = try check(krun.setRoot(ctx, config.rootfs), "krun_set_root(\(ctx), \(config.rootfs))")

        // argv holds the arguments only (the path becomes argv[0] in the guest). envp is never
        // NULL: NULL would copy this process's environment into the guest (notes §1.3).
        // KRUN_INIT_PID1 (libkrun 1.16) makes libkrun's init exec the agent as PID 1.
        let arguments = config.agentArguments(listen: "vsock:\(CKRUN_AGENT_VSOCK_PORT)", tunnel: "vsock:\(CKRUN_TUNNEL_VSOCK_PORT)")
        // The kernel command line carries these (notes §1.5): keep them few and short.
        let environment = ["KRUN_INIT_PID1=1", "HOSTNAME=\(config.hostname ?? config.name)",
                           SandboxConfig.agentRuntimeEnvironment]
        let execResult = CStringArray.with(arguments) { argv in
            CStringArray.with(environment) { envp in krun.setExec(ctx, config.agentPath, argv, envp) }
        }
        _ = try check(execResult, "krun_set_exec(\(ctx), \(config.agentPath), \(arguments), \(environment))")

        // listen=true: libkrun binds this path and forwards each connection to the guest's port;
        // it refuses (-EEXIST) a path that exists, so a stale socket from a crash goes first.
        let socket = paths.agentSocket.path
        var st = stat()
        if lstat(socket, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK { unlink(socket) }
        _ = try check(krun.addVsockPort2(ctx, CKRUN_AGENT_VSOCK_PORT, socket, true),
                      "krun_add_vsock_port2(\(ctx), \(CKRUN_AGENT_VSOCK_PORT), \(socket), true)")
        // Exposed ports: a second vsock port, so tunnelled bytes never share the agent's
        // framed connection. (The port map of TSI stays empty: nothing is exposed implicitly.)
        let tunnel = paths.tunnelSocket.path
        if lstat(tunnel, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK { unlink(tunnel) }
        _ = try check(krun.addVsockPort2(ctx, CKRUN_TUNNEL_VSOCK_PORT, tunnel, true),
                      "krun_add_vsock_port2(\(ctx), \(CKRUN_TUNNEL_VSOCK_PORT), \(tunnel), true)")
        _ = try check(krun.setConsoleOutput(ctx, paths.console.path), "krun_set_console_output(\(ctx), \(paths.console.path))")

        let rc = krun.startEnter(ctx)
        // Only errors before the VM runs come back; the context is consumed either way.
        if rc == -ENOENT {
            throw BootFailure(stage: .krunConfig, errno: ENOENT,
                              message: "krun_start_enter: no guest kernel (libkrunfw.so.5 could not be loaded)",
                              hint: "install libkrunfw, the kernel bundle libkrun loads, or boot with --backend namespace")
        }
        _ = try check(rc, "krun_start_enter(\(ctx))")
    }
}

extension KrunRunner {
    /// `tether-sandbox krun DIR`: the VMM process. Exits 1 after writing `boot-error.json` when
    /// the VM could not be started; never returns once it runs.
    public static func main(_ arguments: [String]) -> Int32 {
        guard let directory = arguments.first else {
            Supervisor.log("usage: tether-sandbox krun DIR")
            return 2
        }
        let paths = SandboxPaths(directory: URL(fileURLWithPath: directory, isDirectory: true))
        let config: SandboxConfig
        do { config = try SandboxConfig.load(from: paths.config) } catch {
            Supervisor.log(error.message)
            return 1
        }
        let failure = run(config: config, paths: paths)
        failure.write(to: paths.bootError)
        Supervisor.log(failure.description)
        return 1
    }
}
