#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix

/// One device a sandbox may use: a character or block device, its major and minor numbers
/// (nil: any), and what may be done with its nodes (open for reading, for writing, mknod).
public struct DeviceRule: Sendable, Equatable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable, Hashable {
        case character
        case block
    }

    public struct Access: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        // The bit values of the kernel's BPF_DEVCG_ACC_* (csys_cgroup_device.h).
        public static let mknod = Access(rawValue: UInt32(CSYS_DEVICE_MKNOD))
        public static let read = Access(rawValue: UInt32(CSYS_DEVICE_READ))
        public static let write = Access(rawValue: UInt32(CSYS_DEVICE_WRITE))
        public static let all: Access = [.read, .write, .mknod]
    }

    public var kind: Kind
    public var major: UInt32?
    public var minor: UInt32?
    public var access: Access

    public init(_ kind: Kind, _ major: UInt32?, _ minor: UInt32?, _ access: Access = .all) {
        self.kind = kind
        self.major = major
        self.minor = minor
        self.access = access
    }

    /// The line cgroup v1's devices.allow takes and devices.list shows: "c 1:3 rwm", "c 136:* rwm".
    public var description: String {
        let number = { (value: UInt32?) in value.map(String.init) ?? "*" }
        var letters = ""
        if access.contains(.read) { letters += "r" }
        if access.contains(.write) { letters += "w" }
        if access.contains(.mknod) { letters += "m" }
        return "\(kind == .character ? "c" : "b") \(number(major)):\(number(minor)) \(letters)"
    }

    /// What every namespace sandbox may use: the memory devices (null, zero, full, random,
    /// urandom), the controlling terminal (/dev/tty), and pseudo-terminals (ptmx and the pts
    /// nodes, major 136). Nothing else opens and nothing else can be created with mknod: not
    /// the host's disks, not /dev/kmsg (1:11, the kernel log), not /dev/mem, and not
    /// /dev/console (5:1), which in a PID namespace is the host's own console.
    public static let sandboxDefaults: [DeviceRule] = [
        DeviceRule(.character, 1, 3),     // null
        DeviceRule(.character, 1, 5),     // zero
        DeviceRule(.character, 1, 7),     // full
        DeviceRule(.character, 1, 8),     // random
        DeviceRule(.character, 1, 9),     // urandom
        DeviceRule(.character, 5, 0),     // tty
        DeviceRule(.character, 5, 2),     // ptmx
        DeviceRule(.character, 136, nil), // pts/N
    ]
}

/// Why a device program could not be put on a cgroup v2 directory.
public struct DeviceProgramError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The step: "open" (the directory), "load" (bpf(BPF_PROG_LOAD): the verifier, or no BPF in
    /// this kernel) or "attach" (bpf(BPF_PROG_ATTACH): not a cgroup v2 directory, or an
    /// ancestor holds a program that allows no others below it).
    public var step: String
    public var errno: Errno
    /// The verifier's reasons, when it refused the program.
    public var verifierLog: String?

    public var description: String {
        "\(step) failed: \(errno)" + (verifierLog.map { $0.isEmpty ? "" : " (verifier: \($0))" } ?? "")
    }
}

/// Device allow-lists on cgroup directories: cgroup v1's devices.deny/devices.allow files, and
/// on cgroup v2 (which has no such files) a BPF_PROG_TYPE_CGROUP_DEVICE program. The kernel
/// consults both on every open and mknod of a device node: first the programs of the task's
/// cgroup v2 cgroup, then its v1 devices cgroup; either can refuse (EPERM).
enum CgroupDevices {
    /// Makes a cgroup v1 devices directory deny everything but `rules`. Returns the first
    /// failure as "file: errno", nil when the list is in place. On a failure part-way through the
    /// directory allows everything again: a half-written list could leave the sandbox without
    /// /dev/null, and the caller warns that no list was applied.
    static func applyV1(_ rules: [DeviceRule], in directory: String) -> String? {
        // "a" in devices.deny switches the cgroup to deny-by-default and drops its exceptions
        // (EINVAL once the cgroup has children: this runs before anything is inside).
        var failure = Cgroup.writeAll([("devices.deny", "a")], in: directory)
        if failure == nil {
            failure = Cgroup.writeAll(rules.map { ("devices.allow", $0.description) }, in: directory)
            if failure != nil { _ = Cgroup.write("a", to: directory + "/devices.allow") }
        }
        return failure
    }

    /// Attaches a program allowing exactly `rules` to a cgroup v2 directory. It stays attached
    /// after this returns (the kernel holds it) and goes when the directory is removed.
    static func attachProgram(_ rules: [DeviceRule], to directory: String) throws(DeviceProgramError) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw DeviceProgramError(step: "open", errno: .current) }
        let cgroup = OwnedFD(adopting: fd)
        let cRules = rules.map { rule in
            csys_device_rule(kind: rule.kind == .character ? Int32(CSYS_DEVICE_CHAR) : Int32(CSYS_DEVICE_BLOCK),
                             major: rule.major.map(Int64.init) ?? -1, minor: rule.minor.map(Int64.init) ?? -1,
                             access: rule.access.rawValue)
        }
        var log = [CChar](repeating: 0, count: 16 * 1024)
        var failedStep: CInt = 0
        let result = cRules.withUnsafeBufferPointer { buffer in
            csys_cgroup_device_attach(cgroup.raw, buffer.baseAddress, CInt(buffer.count), &log, log.count, &failedStep)
        }
        guard result == 0 else {
            // The log is filled only when the verifier refused the program.
            let verifier = log.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw DeviceProgramError(step: failedStep == CInt(CSYS_DEVICE_STEP_ATTACH) ? "attach" : "load",
                                     errno: Errno(rawValue: -result),
                                     verifierLog: verifier.isEmpty ? nil : String(verifier.suffix(2000)))
        }
    }

    /// How many device programs are attached to a cgroup v2 directory itself; nil when it
    /// cannot be asked (no such directory, no BPF).
    static func programCount(on directory: String) -> Int? {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let cgroup = OwnedFD(adopting: fd)
        let count = csys_cgroup_device_program_count(cgroup.raw)
        return count >= 0 ? Int(count) : nil
    }
}
