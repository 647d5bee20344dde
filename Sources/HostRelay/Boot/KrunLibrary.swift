#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CKrun
import TetherPosix

/// Why libkrun could not be used on this host.
public enum KrunLoadError: Error, Equatable, Sendable {
    /// dlopen failed for every name tried.
    case libraryNotFound(tried: [String], detail: String)
    /// The library loaded but lacks a call we need (an older release).
    case missingSymbol(library: String, symbol: String, since: String)

    public var message: String {
        switch self {
        case .libraryNotFound(let tried, let detail):
            "libkrun is not installed on this host (dlopen \(tried.joined(separator: ", ")): \(detail))"
        case .missingSymbol(let library, let symbol, let since):
            "\(library) has no \(symbol) (added in libkrun \(since))"
        }
    }

    public var hint: String {
        switch self {
        case .libraryNotFound:
            "install libkrun and libkrunfw (Fedora: dnf install libkrun libkrunfw; Debian 12 has no package: "
                + "build both from containers/libkrun and containers/libkrunfw, or set TETHER_LIBKRUN=/path/libkrun.so.1), "
                + "or boot with --backend namespace"
        case .missingSymbol:
            "update libkrun to \(KrunLibrary.minimumVersion) or later, or boot with --backend namespace"
        }
    }

    public var errno: Int32 {
        switch self {
        case .libraryNotFound: ENOENT
        case .missingSymbol: ENOSYS
        }
    }

    public var bootFailure: BootFailure {
        BootFailure(stage: .krunLoad, errno: errno, message: message, hint: hint)
    }
}

/// libkrun loaded with dlopen(3) and its calls resolved with dlsym(3) (see CKrun/ckrun.h and
/// notes/libkrun.md). Owns the dlopen handle for the life of the process: the krun runner
/// never unloads it (krun_start_enter does not return once the VM runs).
public struct KrunLibrary: @unchecked Sendable {
    /// Sonames tried in order (notes §1.1): the ABI-versioned name first.
    public static let defaultNames = ["libkrun.so.1", "libkrun.so"]
    /// The oldest release with every call the backend requires (krun_add_vsock_port2).
    public static let minimumVersion = "1.10.0"

    public let path: String
    let createContext: ckrun_create_ctx_fn
    let freeContext: ckrun_free_ctx_fn?
    let setVMConfig: ckrun_set_vm_config_fn
    let setRoot: ckrun_set_root_fn
    let setExec: ckrun_set_exec_fn
    let addVsockPort2: ckrun_add_vsock_port2_fn
    let setConsoleOutput: ckrun_set_console_output_fn
    let startEnter: ckrun_start_enter_fn
    /// v1.17.0: only needed for `--network none` (vsock without TSI).
    let disableImplicitVsock: ckrun_disable_implicit_vsock_fn?
    let addVsock: ckrun_add_vsock_fn?
    /// v0.1.3 (TSI only): the ports of the guest exposed on the host; NULL exposes all of them.
    let setPortMap: ckrun_set_port_map_fn?

    /// Loads `explicitPath`, else `$TETHER_LIBKRUN`, else the default sonames.
    public static func load(explicitPath: String? = nil,
                            environment: [String: String] = KrunLibrary.processEnvironment()) throws(KrunLoadError) -> KrunLibrary {
        let names: [String]
        if let explicitPath { names = [explicitPath] }
        else if let fromEnvironment = environment["TETHER_LIBKRUN"], !fromEnvironment.isEmpty { names = [fromEnvironment] }
        else { names = defaultNames }

        var errors: [String] = []
        for name in names {
            if let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) {
                return try resolve(handle: handle, path: name)
            }
            errors.append(dlerror().map { String(cString: $0) } ?? "\(name): not found")
        }
        throw .libraryNotFound(tried: names, detail: errors.joined(separator: "; "))
    }

    /// Whether libkrun can be loaded here. Calls nothing in it; the library stays mapped.
    public static func probe(explicitPath: String? = nil) -> KrunLoadError? {
        do { _ = try load(explicitPath: explicitPath) } catch { return error }
        return nil
    }

    private static func resolve(handle: UnsafeMutableRawPointer, path: String) throws(KrunLoadError) -> KrunLibrary {
        func required<F>(_ symbol: String, since: String, as type: F.Type) throws(KrunLoadError) -> F {
            guard let address = dlsym(handle, symbol) else {
                throw .missingSymbol(library: path, symbol: symbol, since: since)
            }
            return unsafeBitCast(address, to: type)
        }
        func optional<F>(_ symbol: String, as type: F.Type) -> F? {
            dlsym(handle, symbol).map { unsafeBitCast($0, to: type) }
        }
        return KrunLibrary(
            path: path,
            createContext: try required("krun_create_ctx", since: "0.1.1", as: ckrun_create_ctx_fn.self),
            freeContext: optional("krun_free_ctx", as: ckrun_free_ctx_fn.self),
            setVMConfig: try required("krun_set_vm_config", since: "0.1.1", as: ckrun_set_vm_config_fn.self),
            setRoot: try required("krun_set_root", since: "0.1.1", as: ckrun_set_root_fn.self),
            setExec: try required("krun_set_exec", since: "0.1.1", as: ckrun_set_exec_fn.self),
            addVsockPort2: try required("krun_add_vsock_port2", since: "1.10.0", as: ckrun_add_vsock_port2_fn.self),
            setConsoleOutput: try required("krun_set_console_output", since: "1.8.0", as: ckrun_set_console_output_fn.self),
            startEnter: try required("krun_start_enter", since: "0.1.1", as: ckrun_start_enter_fn.self),
            disableImplicitVsock: optional("krun_disable_implicit_vsock", as: ckrun_disable_implicit_vsock_fn.self),
            addVsock: optional("krun_add_vsock", as: ckrun_add_vsock_fn.self),
            setPortMap: optional("krun_set_port_map", as: ckrun_set_port_map_fn.self))
    }

    public static func processEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let eq = text.firstIndex(of: "=") {
                result[String(text[..<eq])] = String(text[text.index(after: eq)...])
            }
            pointer += 1
        }
        return result
    }
}
