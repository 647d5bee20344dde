// tether-sandbox: the host process that stays with one sandbox (see Supervisor), and the krun
// backend's VMM process (see KrunRunner). Started by `tether boot`/`tether run`, not by hand.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherBoot

let arguments = Array(CommandLine.arguments.dropFirst())
switch arguments.first {
case "supervise":
    exit(Supervisor.main(Array(arguments.dropFirst())))
case "krun":
    exit(KrunRunner.main(Array(arguments.dropFirst())))
default:
    Supervisor.log("usage: tether-sandbox supervise DIR [--lock-fd N] [--ready-fd N] [--detach] | tether-sandbox krun DIR")
    exit(2)
}
