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
let report = Report()
do {
    report.section("baselines")
    let spawn = try Baselines.spawnTrue(count: spawnCount)
    report.value("posix_spawn+waitpid /bin/true median", microseconds(spawn.median))
    report.value("posix_spawn+waitpid /bin/true p99", microseconds(spawn.p99))
    let pipeNs = try Baselines.pipeThroughput(bytes: streamBytes)
    let pipeMBps = megabytesPerSecond(bytes: streamBytes, ns: pipeNs)
    report.value("pipe ceiling (head -c \(streamBytes >> 20)MiB /dev/zero)", formatted(pipeMBps, decimals: 0) + " MB/s")
    let socketNs = try Baselines.socketThroughput(bytes: streamBytes)
    let socketMBps = megabytesPerSecond(bytes: streamBytes, ns: socketNs)
    report.value("AF_UNIX socketpair ceiling", formatted(socketMBps, decimals: 0) + " MB/s")
} catch {
    report.failure("\(error)")
    exit(1)
}
