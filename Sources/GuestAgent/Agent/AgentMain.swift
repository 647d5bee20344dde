#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix

/// The agent's `main`: parse the command line, boot (as PID 1) or become a subreaper,
/// hand PID 1 to an init if asked, serve, then exit or power off.
public enum AgentMain {
    /// Runs the agent; returns the exit status (after a power-off request that failed, too).
    public static func run(arguments: [String]) -> Int32 {
        let bootNs = Clock.bootTimeNs()
        // Buffers of 128 KiB and more (a stream's frames queued for the host) are mapped and
        // unmapped whole. glibc would otherwise raise that threshold to the largest buffer
        // freed so far and keep such buffers in its heap, which it rarely gives back: the
        // agent's resident set then stayed megabytes above what it uses, after every stream.
        _ = csys_set_mmap_threshold(128 << 10)
        let isPID1 = getpid() == 1

        var options = AgentOptions()
        do {
            options = try AgentOptions(parsing: Array(arguments.dropFirst()))
        } catch {
            // PID 1 must not exit over a typo on the kernel command line: defaults instead.
            guard isPID1 else {
                printError("tether-agent: \(error.message)\n\(AgentOptions.usage)\n")
                return 2
            }
            Log.warning("\(error.message); carrying on with the defaults")
        }
        if options.helpRequested {
            print(AgentOptions.usage)
            return 0
        }
        if options.versionRequested {
            print("tether-agent \(Agent.version)")
            return 0
        }
        if options.initProgram != nil && !isPID1 {
            printError("tether-agent: --init needs the agent to run as PID 1\n\(AgentOptions.usage)\n")
            return 2
        }

        // Before anything else: a blocked signal is only safe to read from a signalfd if
        // every thread blocks it, and no thread exists yet.
        Signals.ignore(SIGPIPE)
        let signalFD: CInt
        do {
            try Signals.block(Agent.handledSignals)
            signalFD = try Signals.openSignalFD(Agent.handledSignals).release()
        } catch {
            return fail(BootError(stage: "signals", errno: error.rawValue, message: "cannot set up the signalfd: \(error)"), isPID1: isPID1)
        }

        let role: Agent.Role
        do {
            role = try isPID1 ? bootAsPID1(options) : becomeSubreaper(options)
        } catch {
            return fail(error, isPID1: isPID1)
        }

        let baseLimits = raiseDescriptorLimit()
        let agent: Agent
        do {
            agent = try Agent(options: options, role: role, signalFD: signalFD, bootNs: bootNs, baseLimits: baseLimits)
            try agent.run()
        } catch let error as BootError {
            return fail(error, isPID1: isPID1)
        } catch {
            return fail(BootError(stage: "loop", errno: (error as? Errno)?.rawValue ?? 0, message: "cannot start the event loop: \(error)"), isPID1: isPID1)
        }

        switch agent.finalAction {
        case .exit(let code):
            return code
        case .powerOff:
            Boot.unmountForPowerOff()
            let result = csys_reboot_power_off()
            Log.warning("power-off failed: \(Errno(rawValue: -result)); exiting")
            return 0
        }
    }

    /// PID 1: /proc, then either the hand-off to an init or the rest of the file systems.
    private static func bootAsPID1(_ options: AgentOptions) throws(BootError) -> Agent.Role {
        try Boot.mountProc()
        Boot.clearStaleReport()
        let inNamespace = !Boot.isInitialPIDNamespace()
        let hostname = options.hostname ?? (options.initProgram == nil ? Boot.configuredHostname() : nil)

        if let choice = options.initProgram {
            if let initSystem = try InitSystem.resolve(choice) {
                try Boot.mountSysUnlessPresent()
                if inNamespace {
                    try Boot.mountRest(minimalDev: true, tmp: false)
                } else {
                    try Boot.mount(Boot.run)
                }
                if let hostname { try Boot.setHostname(hostname) }
                Boot.writeResolvConf(options.nameservers)
                Log.info("handing PID 1 to \(initSystem.path) (\(initSystem.flavor.rawValue))")
                try initSystem.handOff()
                Boot.ensureStandardDescriptors()
                return .initChild(initSystem)
            }
            Log.warning("--init auto: no init found; the agent stays PID 1")
        }

        try Boot.mountRest(minimalDev: true, tmp: true)
        if let hostname { try Boot.setHostname(hostname) }
        Boot.writeResolvConf(options.nameservers)
        Boot.ensureStandardDescriptors()
        return inNamespace ? .namespaceInit : .machineInit
    }

    private static func becomeSubreaper(_ options: AgentOptions) throws(BootError) -> Agent.Role {
        if options.hostname != nil { Log.info("--hostname is ignored when the agent is not PID 1") }
        let result = csys_set_child_subreaper()
        if result != 0 {
            throw BootError(stage: "subreaper", errno: -result, message: "cannot become a child subreaper: \(Errno(rawValue: -result))")
        }
        do { try GuestCapabilities.lowerStandaloneBoundingSet() } catch {
            Log.warning("cannot lower the agent's bounding set (\(error)); every command lowers its own instead")
        }
        Boot.ensureStandardDescriptors()
        return .subreaper
    }

    /// Raises the agent's own soft descriptor limit to the hard one (it holds a few per
    /// session); children get the original soft limit back (select(2) users expect 1024).
    private static func raiseDescriptorLimit() -> [csys_rlimit] {
        var limit = rlimit()
        guard getrlimit(CInt(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return [] }
        let original = limit.rlim_cur
        let target = min(limit.rlim_max, 1 << 20)
        guard original < target else { return [] }
        var raised = limit
        raised.rlim_cur = target
        guard setrlimit(CInt(RLIMIT_NOFILE.rawValue), &raised) == 0 else { return [] }
        return [csys_rlimit(resource: CInt(RLIMIT_NOFILE.rawValue), soft: original, hard: limit.rlim_max)]
    }

    private static func fail(_ error: BootError, isPID1: Bool) -> Int32 {
        if isPID1 {
            Boot.report(error)
        } else {
            printError("tether-agent: \(error.message)\n")
        }
        return 1
    }

    private static func printError(_ text: String) {
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
