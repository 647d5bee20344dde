// tether-bench: Tether's exec and streaming performance as ratios against what this machine's
// kernel does in the same run. Run in release mode:
//
//     swift run -c release tether-bench [--quick]
//
// Prints `name: value` lines, then the ratios.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TetherBoot
import TetherClient

var quick = false
for argument in CommandLine.arguments.dropFirst() {
    switch argument {
    case "--quick": quick = true
    case "-h", "--help":
        print("usage: tether-bench [--quick]\n  --quick  fewer iterations and smaller transfers (a smoke run, not for figures)")
        exit(0)
    default:
        FileHandle.standardError.write(Data("tether-bench: unknown argument \(argument)\n".utf8))
        exit(2)
    }
}
signal(SIGPIPE, SIG_IGN)

let spawnCount = quick ? 200 : 2000
let streamBytes = quick ? 64 << 20 : 1 << 30
let stdinBytes = quick ? 32 << 20 : 256 << 20
let copyBytes = quick ? 64 << 20 : 1 << 30
let largeCopyBytes = quick ? 256 << 20 : 4 << 30
let (clientCount, sessionsPerClient) = quick ? (10, 10) : (50, 20)
let bootCount = quick ? 5 : 20
/// Every bulk transfer (ceilings and Tether's) is run this many times; its median is reported.
let runs = quick ? 1 : 3
let report = Report()
do {
    report.section("machine")
    report.value("cpus", String(ProcessInfo.processInfo.activeProcessorCount))
    report.value("memory", formatted(Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30), decimals: 1) + " GiB")
    report.value("kernel", ProcessInfo.processInfo.operatingSystemVersionString)

    report.section("baselines")
    report.value("bulk transfers (ceilings and Tether's)", "median of \(runs) run\(runs == 1 ? "" : "s") each")
    let spawn = try Baselines.spawnTrue(count: spawnCount)
    report.value("posix_spawn+waitpid /bin/true median", microseconds(spawn.median))
    report.value("posix_spawn+waitpid /bin/true p99", microseconds(spawn.p99))
    // The agent's spawn code in this process, once without a filter and once with the default
    // one: with posix_spawn and the execs below, each part of an exec is measured apart.
    let (confinedSpawn, unfilteredSpawn, spawnerCPUNs) = try TetherMeasurements.directSpawns(count: spawnCount)
    report.value("the agent's spawn in-process (pipes, confinement, default filter) median", microseconds(confinedSpawn.median))
    report.value("the agent's spawn in-process, seccomp none, median", microseconds(unfilteredSpawn.median))
    report.value("the agent's spawn in-process, CPU of the spawning thread per spawn", microseconds(nanoseconds: Double(spawnerCPUNs)))
    report.value("ceilings of bulk transfers", "each measured alternately with the transfer it bounds (below)")
    // A client and an agent are two processes the scheduler spreads over the vCPUs, so the
    // floor under a ping is the round trip between two of them; on one vCPU it is printed too.
    let cpuCount = ProcessInfo.processInfo.activeProcessorCount
    let unixTrip = try Baselines.unixRoundTrip(count: spawnCount, cpus: (timing: 0, echo: cpuCount > 1 ? 1 : 0))
    report.value("AF_UNIX 64-byte round trip median, two vCPUs", microseconds(unixTrip.median))
    let unixTripOneCPU = try Baselines.unixRoundTrip(count: spawnCount, cpus: (timing: 0, echo: 0))
    report.value("AF_UNIX 64-byte round trip median, one vCPU", microseconds(unixTripOneCPU.median))
    let socketNs = try medianElapsed(runs) { try Baselines.socketThroughput(bytes: streamBytes) }
    let socketMBps = megabytesPerSecond(bytes: streamBytes, ns: socketNs)
    report.value("AF_UNIX socketpair ceiling", formatted(socketMBps, decimals: 0) + " MB/s")

    report.section("tether")
    let binaries = try Binaries.locate()
    report.value("agent", binaries.agent + (binaries.agentIsStatic ? "" : " (not the static build: run scripts/build-agent.sh for shipping figures)"))
    var agentStat = stat()
    _ = stat(binaries.agent, &agentStat)
    report.value("agent binary size", megabytes(bytes: Int(agentStat.st_size)))
    let fixture = try Fixture(binaries: binaries)
    /// Prints what `cost` counted over the timed runs of a transfer of `bytesPerRun`, per GiB,
    /// as "CPU per GiB `name`" and "context switches per GiB `name`"; returns the figures.
    @discardableResult
    func reportPerGiB(_ cost: TransferCost, _ name: String, bytesPerRun: Int, client: String = "client") -> TransferCost.Mark {
        let perGiB = cost.perGiB(of: bytesPerRun * max(runs, 1))
        let text = TransferCost.describe(perGiB, client: client)
        report.value("CPU per GiB \(name) (the timed runs)", text.cpu)
        report.value("context switches per GiB \(name)", text.switches)
        return perGiB
    }
    let viaRelay = try await TetherClient.connect(to: fixture.relaySocket, name: "tether-bench")
    let direct = try await TetherClient.connect(to: fixture.directAgentSocket, name: "tether-bench")
    let relayCPUBefore = try ThreadCPU(pid: fixture.relay.processIdentifier)
    let exec = try await TetherMeasurements.execRoundTrip(viaRelay, count: spawnCount)
    // Each count includes its loop's warm-up execs.
    let execsPerLoop = UInt64(spawnCount + min(100, spawnCount))
    let relayCPUPerExec = (try ThreadCPU(pid: fixture.relay.processIdentifier).nanoseconds - relayCPUBefore.nanoseconds) / execsPerLoop
    report.value("exec /bin/true via relay median", microseconds(exec.median))
    report.value("exec /bin/true via relay p99", microseconds(exec.p99))
    report.value("relay CPU per exec", microseconds(nanoseconds: Double(relayCPUPerExec)))
    let agentCPUBefore = try ThreadCPU(pid: fixture.directAgent.processIdentifier)
    let execDirect = try await TetherMeasurements.execRoundTrip(direct, count: spawnCount)
    let agentCPUPerExec = (try ThreadCPU(pid: fixture.directAgent.processIdentifier).nanoseconds - agentCPUBefore.nanoseconds) / execsPerLoop
    report.value("exec /bin/true direct to agent median", microseconds(execDirect.median))
    report.value("exec /bin/true direct to agent p99", microseconds(execDirect.p99))
    report.value("agent CPU per exec (its loop thread; the child's own time apart)", microseconds(nanoseconds: Double(agentCPUPerExec)))
    let ping = try await TetherMeasurements.pingRoundTrip(viaRelay, count: spawnCount)
    report.value("ping via relay median", microseconds(ping.median))
    let pingDirect = try await TetherMeasurements.pingRoundTrip(direct, count: spawnCount)
    report.value("ping direct to agent median", microseconds(pingDirect.median))
    direct.close()
    let idle = try ResidentSet(pid: fixture.agent.processIdentifier)
    report.value("agent RSS idle", mebibytes(kib: idle.currentKiB))
    let stdoutCost = TransferCost(fixture)
    let (pipeNs, stdoutNs) = try await pairedMedians(runs, ceiling: { try Baselines.pipeThroughput(bytes: streamBytes) },
                                                     tether: { try await TetherMeasurements.stdoutThroughput(viaRelay, bytes: streamBytes, cost: stdoutCost) })
    let pipeMBps = megabytesPerSecond(bytes: streamBytes, ns: pipeNs)
    report.value("pipe ceiling (head -c \(streamBytes >> 20)MiB /dev/zero), alternating with stdout", formatted(pipeMBps, decimals: 0) + " MB/s")
    let stdoutMBps = megabytesPerSecond(bytes: streamBytes, ns: stdoutNs)
    report.value("stdout \(streamBytes >> 20) MiB end to end", formatted(stdoutMBps, decimals: 0) + " MB/s")
    let stdoutPerGiB = reportPerGiB(stdoutCost, "of stdout", bytesPerRun: streamBytes)
    let streaming = try ResidentSet(pid: fixture.agent.processIdentifier)
    report.value("agent RSS peak (VmHWM) after streaming", mebibytes(kib: streaming.peakKiB))
    let stdinCost = TransferCost(fixture)
    let (stdinPipeNs, stdinNs) = try await pairedMedians(runs, ceiling: { try Baselines.pipeThroughput(bytes: streamBytes) },
                                                         tether: { try await TetherMeasurements.stdinThroughput(viaRelay, bytes: stdinBytes, cost: stdinCost) })
    let stdinPipeMBps = megabytesPerSecond(bytes: streamBytes, ns: stdinPipeNs)
    report.value("pipe ceiling, alternating with stdin", formatted(stdinPipeMBps, decimals: 0) + " MB/s")
    let stdinMBps = megabytesPerSecond(bytes: stdinBytes, ns: stdinNs)
    report.value("stdin \(stdinBytes >> 20) MiB end to end (counted; 32 MiB sha256 checked apart)", formatted(stdinMBps, decimals: 0) + " MB/s")
    reportPerGiB(stdinCost, "of stdin", bytesPerRun: stdinBytes)
    let readiness = try await ProcessReadiness.listenToReady(viaRelay, count: quick ? 20 : 100)
    report.value("process start --wait-port: listen() to ready median", microseconds(readiness.median))
    report.value("process start --wait-port: listen() to ready p99", microseconds(readiness.p99))
    let sink = try TunnelMeasurements.Sink()
    let tunnelCost = TransferCost(fixture)
    let (loopbackNs, tunnelNs) = try await pairedMedians(runs, ceiling: { try TunnelMeasurements.loopbackCeiling(sink: sink, bytes: streamBytes) },
                                                         tether: { try await TunnelMeasurements.throughput(viaRelay, sink: sink, bytes: streamBytes, cost: tunnelCost) })
    let loopbackMBps = megabytesPerSecond(bytes: streamBytes, ns: loopbackNs)
    report.value("TCP loopback ceiling (one connection), alternating with the port", formatted(loopbackMBps, decimals: 0) + " MB/s")
    let tunnelMBps = megabytesPerSecond(bytes: streamBytes, ns: tunnelNs)
    report.value("exposed port \(streamBytes >> 20) MiB host -> relay -> agent -> service", formatted(tunnelMBps, decimals: 0) + " MB/s")
    reportPerGiB(tunnelCost, "through the port", bytesPerRun: streamBytes, client: "writer and service (this process)")
    let (busyExec, streamed) = try await TunnelMeasurements.whileStreaming(viaRelay, sink: sink) {
        try await TetherMeasurements.execRoundTrip(viaRelay, count: spawnCount / 2)
    }
    report.value("exec /bin/true via relay median while a tunnel streams", microseconds(busyExec.median)
                 + " (\(streamed >> 20) MiB streamed meanwhile)")
    let idleExec = try await TetherMeasurements.execRoundTrip(viaRelay, count: spawnCount / 2)
    report.value("exec /bin/true via relay median, idle, same run", microseconds(idleExec.median))
    let (busySpawn, _) = try await TunnelMeasurements.whileStreaming(viaRelay, sink: sink) { try Baselines.spawnTrue(count: spawnCount / 2) }
    report.value("posix_spawn+waitpid /bin/true median while a tunnel streams", microseconds(busySpawn.median))
    // Its idle figure beside it, as the exec's is: the spawn median from the start of the run
    // was taken a minute earlier, before any sandbox process existed.
    let idleSpawn = try Baselines.spawnTrue(count: spawnCount / 2)
    report.value("posix_spawn+waitpid /bin/true median, idle, same run", microseconds(idleSpawn.median))
    sink.close()
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("tether-bench-files-\(getpid())").path
    try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: scratch) }
    // The same pseudo-random bytes each run: the last upload's digest checks every download.
    var upSHA256: [UInt8] = []
    let upCost = TransferCost(fixture)
    let downCost = TransferCost(fixture)
    let (fileWriteNs, upNs) = try await pairedMedians(runs, ceiling: {
        try Baselines.fileWriteThroughput(bytes: copyBytes, path: scratch + "/ceiling")
    }, tether: {
        // A new file each run, as the ceiling writes one: replacing the last run's 1 GiB would
        // time ext4 freeing its blocks (up to 0.2 s in the rename here).
        unlink(scratch + "/copy")
        let up = try await FileMeasurements.upload(viaRelay, path: scratch + "/copy", bytes: copyBytes, cost: upCost)
        upSHA256 = up.sha256
        return up.ns
    })
    let fileWriteMBps = megabytesPerSecond(bytes: copyBytes, ns: fileWriteNs)
    report.value("file write ceiling (head -c \(copyBytes >> 20)MiB /dev/zero | write, fsync), alternating with cp in",
                 formatted(fileWriteMBps, decimals: 0) + " MB/s")
    let upMBps = megabytesPerSecond(bytes: copyBytes, ns: upNs)
    report.value("cp \(copyBytes >> 20) MiB host -> guest via relay (sha256 checked)", formatted(upMBps, decimals: 0) + " MB/s")
    reportPerGiB(upCost, "of cp in", bytesPerRun: copyBytes)
    let (fileReadNs, downNs) = try await pairedMedians(runs, ceiling: { try Baselines.fileReadThroughput(path: scratch + "/copy", bytes: copyBytes) },
                                                       tether: { try await FileMeasurements.download(viaRelay, path: scratch + "/copy", expected: upSHA256, cost: downCost) })
    let fileReadMBps = megabytesPerSecond(bytes: copyBytes, ns: fileReadNs)
    report.value("file read ceiling (cat of the \(copyBytes >> 20) MiB file, cached), alternating with cp out", formatted(fileReadMBps, decimals: 0) + " MB/s")
    let downMBps = megabytesPerSecond(bytes: copyBytes, ns: downNs)
    report.value("cp \(copyBytes >> 20) MiB guest -> host via relay (sha256 checked)", formatted(downMBps, decimals: 0) + " MB/s")
    reportPerGiB(downCost, "of cp out", bytesPerRun: copyBytes)
    try? FileManager.default.removeItem(atPath: scratch + "/copy")
    let large = try await FileMeasurements.upload(viaRelay, path: scratch + "/large", bytes: largeCopyBytes)
    _ = try await FileMeasurements.download(viaRelay, path: scratch + "/large", expected: large.sha256)
    try? FileManager.default.removeItem(atPath: scratch + "/large")
    let afterCopies = try ResidentSet(pid: fixture.agent.processIdentifier)
    report.value("agent RSS peak (VmHWM) after \(largeCopyBytes >> 20) MiB each way", mebibytes(kib: afterCopies.peakKiB))
    let stat = try await FileMeasurements.statRoundTrip(viaRelay, count: spawnCount)
    report.value("fs.stat via relay median", microseconds(stat.median))
    viaRelay.close()
    let many = try await TetherMeasurements.concurrentSessions(socket: fixture.relaySocket, clients: clientCount, perClient: sessionsPerClient)
    report.value("\(clientCount * sessionsPerClient) concurrent sessions from \(clientCount) clients", formatted(Double(many.ns) / 1e6, decimals: 0) + " ms")
    report.value("bytes lost of \(many.total)", String(many.lost))
    let afterLoad = try ResidentSet(pid: fixture.agent.processIdentifier)
    report.value("agent RSS after the concurrent sessions", mebibytes(kib: afterLoad.currentKiB))

    // Last of the relay fixture's measurements: it freezes the agent (SIGSTOP) several times.
    let agentTimeout = Duration.milliseconds(500)
    let frozen = try await AgentTimeoutMeasurement.detection(socket: fixture.relaySocket, agentPid: fixture.agent.processIdentifier,
                                                             timeout: agentTimeout, count: quick ? 3 : 10)
    report.value("frozen agent reported (agentTimeout 500ms) median", microseconds(frozen.median))
    report.value("frozen agent reported (agentTimeout 500ms) p99", microseconds(frozen.p99))

    var bootMedian: UInt64?
    do {
        let rootfs = try BootTiming.bundledRootfs(agent: binaries.agent)
        let boots = try BootTiming.namespaceBootToHello(rootfs: rootfs, count: bootCount, ephemeral: true)
        bootMedian = boots.median
        report.value("namespace boot to hello, --ephemeral, median (\(bootCount) boots)", microseconds(boots.median))
        report.value("namespace boot to hello, --ephemeral, p99", microseconds(boots.p99))
        let first = try BootTiming.namespaceBootToHello(rootfs: rootfs, count: bootCount, ephemeral: false)
        report.value("namespace first boot of a name (mkfs of its layer) median", microseconds(first.median))
        report.value("namespace first boot of a name p99", microseconds(first.p99))
    } catch {
        report.value("namespace boot to hello", "not measured: \(error)")
    }
    do {
        let rootfs = try BootTiming.bundledRootfs(agent: binaries.agent)
        let egress = try BootTiming.namespaceBootToHello(rootfs: rootfs, count: bootCount, ephemeral: true, network: .egress)
        report.value("namespace boot to hello, --network egress (nft rules, pasta configured), median", microseconds(egress.median))
        report.value("namespace boot to hello, --network egress, p99", microseconds(egress.p99))
    } catch {
        report.value("namespace boot to hello, --network egress", "not measured: \(error)")
    }

    report.section("ratios")
    report.value("exec round trip via relay / posix_spawn", formatted(Double(exec.median) / Double(spawn.median), decimals: 2) + "x (target <= 1.15x)")
    report.value("exec round trip direct / posix_spawn", formatted(Double(execDirect.median) / Double(spawn.median), decimals: 2) + "x")
    // What an exec costs beyond the transport: the agent's spawn, exit and reaping of the child.
    let spawnInAgent = Double(exec.median) - Double(ping.median)
    report.value("(exec - ping) via relay / posix_spawn", formatted(spawnInAgent / Double(spawn.median), decimals: 2)
                 + "x (the agent's own spawn, without the transport)")
    // Where an exec's time goes, part by part (each a difference of two medians of this run).
    let filterCost = Double(confinedSpawn.median) - Double(unfilteredSpawn.median)
    let confinementCost = Double(unfilteredSpawn.median) - Double(spawn.median)
    let loopCost = Double(execDirect.median) - Double(confinedSpawn.median)
    let relayCost = Double(exec.median) - Double(execDirect.median)
    report.value("exec via relay, part by part", "posix_spawn \(microseconds(spawn.median))"
                 + " + pipes and capability bound \(microseconds(nanoseconds: confinementCost))"
                 + " + seccomp filter install \(microseconds(nanoseconds: filterCost))"
                 + " + agent loop, protocol and socket \(microseconds(nanoseconds: loopCost))"
                 + " + relay hop \(microseconds(nanoseconds: relayCost))")
    report.value("agent's spawn in-process / posix_spawn", formatted(Double(confinedSpawn.median) / Double(spawn.median), decimals: 2)
                 + "x (what confinement costs a spawn)")
    report.value("exec direct / agent's spawn in-process", formatted(Double(execDirect.median) / Double(confinedSpawn.median), decimals: 2)
                 + "x (what the agent's loop, protocol and one socket hop add)")
    // The loop part split in two: the agent's CPU beyond what the same spawn costs its
    // caller in-process, and the rest: the client's own work and the wake-ups between the
    // two (the request, `started`, `exited` with `done`), each a sleeping thread scheduled again.
    let loopCPU = Double(agentCPUPerExec) - Double(spawnerCPUNs)
    report.value("agent loop, protocol and socket, split", "the agent's CPU beyond the in-process spawner's \(microseconds(nanoseconds: loopCPU))"
                 + " + the client's work and the wake-ups between them \(microseconds(nanoseconds: loopCost - loopCPU))")
    report.value("ping via relay / ping direct", formatted(Double(ping.median) / Double(pingDirect.median), decimals: 2) + "x (target <= 1.5x)")
    report.value("ping direct / unix 64-byte round trip across two vCPUs", formatted(Double(pingDirect.median) / Double(unixTrip.median), decimals: 2) + "x (target <= 2x)")
    report.value("agent CPU per GiB of stdout", formatted(stdoutPerGiB.agent.seconds, decimals: 2) + " s (target <= 1 s)")
    report.value("relay CPU per GiB of stdout", formatted(stdoutPerGiB.relay.seconds, decimals: 2) + " s")
    report.value("stdout / pipe ceiling", formatted(100 * stdoutMBps / pipeMBps, decimals: 0) + "% (target >= 60% and >= 1000 MB/s)")
    report.value("stdin / pipe ceiling", formatted(100 * stdinMBps / stdinPipeMBps, decimals: 0) + "% (target >= 60%)")
    report.value("stdin / socket ceiling", formatted(100 * stdinMBps / socketMBps, decimals: 0) + "%")
    // An exposed port's ceiling is the connection it replaces: the same client straight to the
    // service over TCP loopback. The socketpair figure swings 2-9 GB/s with where the two
    // threads run (one core's cache or two), so it is only a second bound.
    report.value("exposed port / TCP loopback ceiling", formatted(100 * tunnelMBps / loopbackMBps, decimals: 0) + "% (target >= 50%)")
    report.value("exposed port / socket ceiling", formatted(100 * tunnelMBps / socketMBps, decimals: 0) + "%")
    report.value("exec while a tunnel streams / idle", formatted(Double(busyExec.median) / Double(idleExec.median), decimals: 2)
                 + "x (target <= 1.5x)")
    report.value("posix_spawn while a tunnel streams / idle", formatted(Double(busySpawn.median) / Double(idleSpawn.median), decimals: 2)
                 + "x (what the same load does to a spawn without Tether)")
    report.value("agent peak RSS", megabytes(bytes: streaming.peakKiB * 1024) + " (target <= 8 MB)")
    // A copy's ceiling is the local copy it stands for: bytes from a pipe onto disk (fsynced)
    // into the guest, a cached file into a pipe out of it; the pipe alone is the other bound.
    report.value("cp host -> guest / file write ceiling", formatted(100 * upMBps / fileWriteMBps, decimals: 0) + "% (target >= 50%)")
    report.value("cp guest -> host / file read ceiling", formatted(100 * downMBps / fileReadMBps, decimals: 0) + "% (target >= 50%)")
    report.value("cp host -> guest / pipe ceiling", formatted(100 * upMBps / pipeMBps, decimals: 0) + "%")
    report.value("cp guest -> host / pipe ceiling", formatted(100 * downMBps / pipeMBps, decimals: 0) + "%")
    report.value("agent peak RSS with file transfers", megabytes(bytes: afterCopies.peakKiB * 1024) + " (target <= 8 MB)")
    report.value("fs.stat / ping via relay", formatted(Double(stat.median) / Double(ping.median), decimals: 2) + "x")
    report.value("agent binary", megabytes(bytes: Int(agentStat.st_size)) + " (target <= 4 MB stripped)")
    if let bootMedian { report.value("namespace boot to hello", microseconds(bootMedian) + " (target <= 50 ms)") }
    report.value("frozen agent reported / agentTimeout", formatted(Double(frozen.median) / Double(agentTimeout.nanoseconds), decimals: 2)
                 + "x (design: just above 1x; the silence is counted from the agent's last frame, at most a ping interval before the freeze)")
    report.value("listen() to process ready p50", microseconds(readiness.median) + " (target <= 50 ms)")
} catch {
    report.failure("\(error)")
    Fixture.killAll()
    exit(1)
}
