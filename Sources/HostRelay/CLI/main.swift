#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Before any thread exists: signals are taken by one thread (SignalWatcher), and a closed
// pipe is an EPIPE error, not a death.
signal(SIGPIPE, SIG_IGN)
SignalWatcher.install()
exit(TetherCLI.main(CommandLine.arguments))
