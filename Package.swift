// swift-tools-version: 6.0
import PackageDescription

// Layout (see README "Layout"): the folder of each target names the part of the architecture
// it belongs to. Dependencies point one way: executables -> libraries -> Protocol/Posix -> C shims.
let package = Package(
    name: "Tether",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "TetherProtocol", targets: ["TetherProtocol"]),
        .library(name: "TetherClient", targets: ["TetherClient"]),
        .library(name: "TetherRelay", targets: ["TetherRelay"]),
        // Sandboxes from Swift: boot, exec, stop (`Sandbox`, `withSandbox`); re-exports
        // TetherBoot's configuration and TetherClient's exec API.
        .library(name: "TetherSandbox", targets: ["TetherSandbox"]),
        .executable(name: "tether-agent", targets: ["tether-agent"]),
        .executable(name: "tether", targets: ["tether"]),
        .executable(name: "tether-bench", targets: ["tether-bench"]),
    ],
    targets: [
        // Frames, CBOR, messages, addresses. Standard library only: no Foundation, no I/O.
        .target(name: "TetherProtocol", path: "Sources/Protocol"),
        // What Swift cannot do safely or cannot import: the fork child, macros, missing headers.
        .target(name: "CSys", path: "Sources/CSys"),
        // Syscall wrappers shared by agent and relay: Errno, owned fds, the epoll loop, sockets.
        .target(name: "TetherPosix", dependencies: ["TetherProtocol", "CSys"], path: "Sources/Posix"),
        // libseccomp from Debian (a static archive ships with it, so the static agent links it).
        .systemLibrary(name: "CSeccomp", path: "Sources/CSeccomp", pkgConfig: "libseccomp",
                       providers: [.apt(["libseccomp-dev"])]),
        // Seccomp policies as data, compiled with libseccomp: loaded (relay) or exported as BPF
        // for a child to install before execve (agent).
        .target(name: "TetherSeccomp", dependencies: ["CSeccomp", "CSys", "TetherPosix"], path: "Sources/Seccomp"),
        // libkrun's C API as function-pointer types, for loading it at run time (never linked).
        .target(name: "CKrun", path: "Sources/CKrun"),

        // The guest agent: a library (so tests and fuzzers drive it in-process) and a thin main.
        // No Foundation: the static binary carries the standard library and Glibc only.
        .target(name: "TetherAgent", dependencies: ["TetherProtocol", "TetherPosix", "TetherSeccomp", "CSys"],
                path: "Sources/GuestAgent/Agent"),
        .executableTarget(name: "tether-agent", dependencies: ["TetherAgent"],
                          path: "Sources/GuestAgent/Main"),

        // The host side: relay daemon, client library, sandbox boot backends, CLI.
        .target(name: "TetherRelay", dependencies: ["TetherProtocol", "TetherPosix", "TetherSeccomp", "CSys"],
                path: "Sources/HostRelay/Relay"),
        .target(name: "TetherClient", dependencies: ["TetherProtocol", "TetherPosix", "CSys"],
                path: "Sources/HostRelay/Client"),
        .target(name: "TetherBoot", dependencies: ["TetherProtocol", "TetherPosix", "CSys", "CKrun"],
                path: "Sources/HostRelay/Boot"),
        // Above Boot and Client, which stay unaware of each other: a sandbox's lifecycle (Boot)
        // joined to a client of its relay (Client). The CLI's boot, run and stop call it.
        .target(name: "TetherSandbox", dependencies: ["TetherBoot", "TetherClient", "TetherPosix", "TetherProtocol"],
                path: "Sources/HostRelay/SandboxLibrary"),
        .executableTarget(name: "tether", dependencies: ["TetherRelay", "TetherClient", "TetherBoot", "TetherSandbox"],
                          path: "Sources/HostRelay/CLI"),
        // One per sandbox, started by `tether boot`: holds the name, reaps the sandbox, stops it;
        // also the krun backend's VMM process (krun_start_enter takes over the process that calls it).
        .executableTarget(name: "tether-sandbox", dependencies: ["TetherBoot"], path: "Sources/HostRelay/Sandbox"),

        .executableTarget(name: "tether-bench", dependencies: ["TetherAgent", "TetherClient", "TetherBoot", "TetherPosix", "CSys"],
                          path: "Sources/Bench"),

        // Shared by the test targets: locating built binaries, temporary dirs, process helpers.
        .target(name: "TestSupport", dependencies: ["TetherProtocol", "TetherPosix"], path: "Tests/TestSupport"),
        .testTarget(name: "ProtocolTests", dependencies: ["TetherProtocol", "TestSupport"],
                    path: "Tests/ProtocolTests", exclude: ["Vectors", "Golden"]),
        .testTarget(name: "PosixTests", dependencies: ["TetherPosix"], path: "Tests/PosixTests"),
        .testTarget(name: "SeccompTests", dependencies: ["TetherSeccomp", "TestSupport"], path: "Tests/SeccompTests"),
        .testTarget(name: "AgentTests", dependencies: ["TetherAgent", "TestSupport"], path: "Tests/AgentTests"),
        .testTarget(name: "RelayTests", dependencies: ["TetherRelay", "TetherClient", "TestSupport"],
                    path: "Tests/RelayTests"),
        // The CLI's own logic (argument parsing, detach keys), imported from the executable.
        .testTarget(name: "CLITests", dependencies: ["tether", "TetherSandbox"], path: "Tests/CLITests"),
        // Stub/ holds the C stub libkrun the krun tests compile with cc; Probes/ the static C
        // programs the confinement tests copy into sandboxes.
        .testTarget(name: "BootTests", dependencies: ["TetherBoot", "TetherClient", "TetherSandbox", "TestSupport"],
                    path: "Tests/BootTests", exclude: ["Stub", "Probes"]),
        // Faults end to end (killed agent or relay, floods, limits, a long soak): real processes.
        .testTarget(name: "ReliabilityTests", dependencies: ["TetherClient", "TetherPosix", "TetherProtocol", "TestSupport"],
                    path: "Tests/ReliabilityTests"),
    ],
    swiftLanguageModes: [.v6]
)
