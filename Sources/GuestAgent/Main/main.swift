#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherAgent

// Boot, run, exit: the work is in TetherAgent (AgentMain).
exit(AgentMain.run(arguments: CommandLine.arguments))
