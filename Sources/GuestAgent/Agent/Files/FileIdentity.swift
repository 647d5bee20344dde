#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// Runs file system calls as a guest user, so permissions are the guest's own: the agent
/// switches its filesystem uid and gid (setfsuid(2), setfsgid(2), which govern permission
/// checks and the owner of new files, and nothing else) and its supplementary groups for the
/// length of the calls, then switches back. The agent is one thread, so the switch cannot
/// leak into anything running beside it; a non-root fsuid also drops the capabilities that
/// bypass permission checks (CAP_DAC_OVERRIDE, CAP_FOWNER, ...) until it is switched back.
///
/// Owned by the files subsystem on the loop thread.
final class FileIdentity {
    private let users = UserDatabase()
    private let ownUID = getuid()
    private let ownGID = getgid()
    private let ownGroups: [gid_t]

    init() {
        let count = getgroups(0, nil)
        var groups = [gid_t](repeating: 0, count: Int(max(count, 0)))
        if count > 0 { _ = getgroups(count, &groups) }
        ownGroups = Array(groups.prefix(Int(max(count, 0))))
    }

    /// The credentials of a request's `user` (nil: the agent's own, root as PID 1).
    func resolve(_ spec: String?) throws(FileFailure) -> ResolvedUser? {
        guard let spec else { return nil }
        do { return try users.resolve(spec) } catch {
            switch error {
            case .invalidSyntax(let text):
                throw FileFailure(.invalidArgument, op: "user", path: nil, "user '\(text)' is not name, uid, name:group or uid:gid")
            case .notFound(let what, let code):
                throw FileFailure(.userNotFound, op: "user", path: nil, errno: code.rawValue, "\(what) does not exist in the guest")
            }
        }
    }

    /// `body` with the filesystem credentials of `user`, restored afterwards whatever happens.
    @discardableResult
    func run<T>(as user: ResolvedUser?, _ body: () throws(FileFailure) -> T) throws(FileFailure) -> T {
        guard let user, user.uid != ownUID || user.gid != ownGID || user.groups != ownGroups else { return try body() }
        let setGroups = user.groups.withUnsafeBufferPointer { csys_setgroups($0.count, $0.baseAddress) }
        guard setGroups == 0 else {
            throw FileFailure(.permissionDenied, op: "setgroups", path: nil, errno: -setGroups,
                              "the agent cannot act as uid \(user.uid): \(Errno(rawValue: -setGroups).message)")
        }
        _ = csys_setfsgid(user.gid)
        _ = csys_setfsuid(user.uid)
        defer {
            _ = csys_setfsuid(ownUID)
            _ = csys_setfsgid(ownGID)
            _ = ownGroups.withUnsafeBufferPointer { csys_setgroups($0.count, $0.baseAddress) }
        }
        // setfsuid reports nothing; reading it back (with an invalid id, which changes nothing)
        // says whether the switch took.
        guard csys_setfsuid(uid_t.max) == user.uid, csys_setfsgid(gid_t.max) == user.gid else {
            throw FileFailure(.permissionDenied, op: "setfsuid", path: nil, errno: EPERM,
                              "the agent cannot act as uid \(user.uid) gid \(user.gid)")
        }
        return try body()
    }
}
