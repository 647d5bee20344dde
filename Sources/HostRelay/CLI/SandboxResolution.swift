import TetherProtocol

/// `--sandbox NAME` -> the socket of that sandbox's relay. The seam for sandbox support
/// (`tether boot`, issue 6): it replaces this body with a lookup under $TETHER_HOME.
enum SandboxResolution {
    static func socket(ofSandbox name: String) throws -> Address {
        throw CLIError(message: "--sandbox \(name): this build of tether cannot boot or find sandboxes yet",
                       hint: "pass --socket unix:PATH of the sandbox's relay", exitStatus: 2)
    }
}
