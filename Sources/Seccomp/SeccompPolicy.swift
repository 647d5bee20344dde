#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A seccomp policy as data: what happens to each syscall. Turned into a kernel filter by
/// `SeccompFilter` (libseccomp), either loaded into this process or exported as BPF for a
/// child to install just before execve.
public struct SeccompPolicy: Sendable {
    public enum Action: Hashable, Sendable {
        case allow
        /// The call fails with this errno; the program sees an ordinary error.
        case errno(CInt)
        /// SIGSYS to the thread (a handler can say which call before dying).
        case trap
        /// The whole process is killed at once; nothing can log.
        case killProcess
    }

    /// `(argument & mask) == value`; with `mask` 0, `argument == value`.
    public struct Condition: Hashable, Sendable {
        public var argument: UInt32
        public var mask: UInt64
        public var value: UInt64
        public static func equals(argument: UInt32, _ value: UInt64) -> Condition { Condition(argument: argument, mask: 0, value: value) }
        /// True when every bit of `bits` is set in the argument.
        public static func hasBits(argument: UInt32, _ bits: UInt64) -> Condition { Condition(argument: argument, mask: bits, value: bits) }
    }

    /// `action` for `syscall` when all `conditions` hold (none: always).
    public struct Rule: Hashable, Sendable {
        public var syscall: String
        public var action: Action
        public var conditions: [Condition]
        public init(_ syscall: String, _ action: Action, when conditions: [Condition] = []) {
            self.syscall = syscall
            self.action = action
            self.conditions = conditions
        }
    }

    public var name: String
    public var defaultAction: Action
    public var rules: [Rule]
    /// Also filter the 32-bit (i386) and x32 ABIs with the same rules, so a 32-bit program
    /// gets the same policy instead of a bypass through `int 0x80`.
    public var coverCompatibilityABIs: Bool

    public init(name: String, defaultAction: Action, rules: [Rule], coverCompatibilityABIs: Bool = true) {
        self.name = name
        self.defaultAction = defaultAction
        self.rules = rules
        self.coverCompatibilityABIs = coverCompatibilityABIs
    }

    /// The syscalls whose action is `action`, in rule order without repeats.
    public func syscalls(withAction action: Action) -> [String] {
        var seen = Set<String>()
        return rules.filter { $0.action == action && seen.insert($0.syscall).inserted }.map(\.syscall)
    }
}

/// Clone flag bits the policies inspect (linux/sched.h).
public enum CloneFlags {
    public static let newNS: UInt64 = 0x0002_0000      // CLONE_NEWNS
    public static let newCgroup: UInt64 = 0x0200_0000  // CLONE_NEWCGROUP
    public static let newUTS: UInt64 = 0x0400_0000     // CLONE_NEWUTS
    public static let newIPC: UInt64 = 0x0800_0000     // CLONE_NEWIPC
    public static let newUser: UInt64 = 0x1000_0000    // CLONE_NEWUSER
    public static let newPID: UInt64 = 0x2000_0000     // CLONE_NEWPID
    public static let newNet: UInt64 = 0x4000_0000     // CLONE_NEWNET
    /// unshare(2) only: in clone's flags this bit belongs to the exit signal.
    public static let newTime: UInt64 = 0x0000_0080    // CLONE_NEWTIME
    public static let thread: UInt64 = 0x0001_0000     // CLONE_THREAD

    /// Every namespace clone(2) and unshare(2) can create.
    public static let namespaces: [UInt64] = [newNS, newCgroup, newUTS, newIPC, newUser, newPID, newNet]
}
