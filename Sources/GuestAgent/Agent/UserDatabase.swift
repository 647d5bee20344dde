#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import TetherPosix

/// Who a program runs as, resolved before fork.
struct ResolvedUser: Equatable {
    var uid: uid_t
    var gid: gid_t
    /// Supplementary groups for setgroups(2), the primary group first.
    var groups: [gid_t]
    /// For USER: the account name, or the number when /etc/passwd has no entry.
    var name: String
    /// For HOME: the account's home, or "/" when there is none.
    var home: String
}

/// Why a `user` value could not be resolved.
enum UserResolutionError: Error, Equatable {
    /// Not of the form `name`, `uid`, `name:group` or `uid:gid`.
    case invalidSyntax(String)
    /// No such user or group; errno is ENOENT, or why the file could not be read.
    case notFound(what: String, errno: Errno)
}

/// The guest's /etc/passwd and /etc/group, parsed by the agent itself: a static binary has no
/// NSS, and the lookups must happen before fork. Reloaded when either file changes (by inode,
/// size and modification time), so `useradd` inside the guest is seen by the next exec.
///
/// Owned by the agent's loop thread; holds no descriptors.
final class UserDatabase {
    struct Account: Equatable {
        var name: String
        var uid: uid_t
        var gid: gid_t
        var home: String
    }
    struct Group: Equatable {
        var name: String
        var gid: gid_t
        var members: [String]
    }

    private let passwdPath: String
    private let groupPath: String
    private var accounts: [Account] = []
    private var groups: [Group] = []
    private var passwdError: Errno?
    private var groupError: Errno?
    private var passwdStamp: FileStamp?
    private var groupStamp: FileStamp?

    init(passwdPath: String = "/etc/passwd", groupPath: String = "/etc/group") {
        self.passwdPath = passwdPath
        self.groupPath = groupPath
    }

    /// Resolves `name`, `uid`, `name:group`, `uid:gid` (and `name:gid`, `uid:group`).
    /// A numeric uid without an account runs with gid = uid (unless a group is given),
    /// HOME=/ and USER=<uid>, as container runtimes do.
    func resolve(_ spec: String) throws(UserResolutionError) -> ResolvedUser {
        reloadIfChanged()
        let parts = spec.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let userPart = parts[0]
        let groupPart = parts.count == 2 ? parts[1] : nil
        guard !userPart.isEmpty, groupPart.map({ !$0.isEmpty && !$0.contains(":") }) ?? true else {
            throw .invalidSyntax(spec)
        }

        var resolved: ResolvedUser
        var accountName: String?
        if let uid = UInt32(userPart) {
            if let account = accounts.first(where: { $0.uid == uid }) {
                resolved = ResolvedUser(uid: uid, gid: account.gid, groups: [], name: account.name, home: account.home)
                accountName = account.name
            } else {
                resolved = ResolvedUser(uid: uid, gid: uid, groups: [], name: userPart, home: "/")
            }
        } else {
            guard let account = accounts.first(where: { $0.name == userPart }) else {
                throw .notFound(what: "user '\(userPart)'", errno: passwdError ?? Errno(rawValue: ENOENT))
            }
            resolved = ResolvedUser(uid: account.uid, gid: account.gid, groups: [], name: account.name, home: account.home)
            accountName = account.name
        }

        if let groupPart {
            if let gid = UInt32(groupPart) {
                resolved.gid = gid
            } else {
                guard let group = groups.first(where: { $0.name == groupPart }) else {
                    throw .notFound(what: "group '\(groupPart)'", errno: groupError ?? Errno(rawValue: ENOENT))
                }
                resolved.gid = group.gid
            }
        }

        resolved.groups = [resolved.gid]
        if let accountName {
            for group in groups where group.members.contains(accountName) && !resolved.groups.contains(group.gid) {
                resolved.groups.append(group.gid)
            }
        }
        return resolved
    }

    /// USER and HOME for a uid that keeps the agent's own credentials.
    func identity(of uid: uid_t) -> (name: String, home: String) {
        reloadIfChanged()
        if let account = accounts.first(where: { $0.uid == uid }) { return (account.name, account.home) }
        return (uid == 0 ? "root" : String(uid), uid == 0 ? "/root" : "/")
    }

    // MARK: loading

    private struct FileStamp: Equatable {
        var device: UInt64, inode: UInt64, size: Int64, seconds: Int, nanoseconds: Int
    }

    private static func stamp(_ path: String) -> FileStamp? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return FileStamp(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
                         seconds: st.st_mtim.tv_sec, nanoseconds: st.st_mtim.tv_nsec)
    }

    private func reloadIfChanged() {
        let passwd = Self.stamp(passwdPath)
        if passwd == nil || passwd != passwdStamp {
            passwdStamp = passwd
            do {
                accounts = Self.parsePasswd(try FileIO.readFile(passwdPath, limit: 8 << 20))
                passwdError = nil
            } catch {
                accounts = []
                passwdError = error
            }
        }
        let group = Self.stamp(groupPath)
        if group == nil || group != groupStamp {
            groupStamp = group
            do {
                groups = Self.parseGroup(try FileIO.readFile(groupPath, limit: 8 << 20))
                groupError = nil
            } catch {
                groups = []
                groupError = error
            }
        }
    }

    /// Splits a colon-separated database into lines of fields, skipping blank lines,
    /// comments and NIS compat entries (`+`/`-`).
    private static func records(_ bytes: [UInt8], fields: Int) -> [[Substring]] {
        let text = String(decoding: bytes, as: UTF8.self)
        var result: [[Substring]] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            guard let first = line.first, first != "#", first != "+", first != "-" else { continue }
            let parts = line.split(separator: ":", omittingEmptySubsequences: false)
            if parts.count >= fields { result.append(parts) }
        }
        return result
    }

    static func parsePasswd(_ bytes: [UInt8]) -> [Account] {
        records(bytes, fields: 7).compactMap { f in
            guard let uid = UInt32(f[2]), let gid = UInt32(f[3]), !f[0].isEmpty else { return nil }
            return Account(name: String(f[0]), uid: uid, gid: gid, home: f[5].isEmpty ? "/" : String(f[5]))
        }
    }

    static func parseGroup(_ bytes: [UInt8]) -> [Group] {
        records(bytes, fields: 4).compactMap { f in
            guard let gid = UInt32(f[2]), !f[0].isEmpty else { return nil }
            let members = f[3].split(separator: ",").map { String($0.trimmingSpaces) }
            return Group(name: String(f[0]), gid: gid, members: members)
        }
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var s = self
        while s.first == " " { s.removeFirst() }
        while s.last == " " || s.last == "\r" { s.removeLast() }
        return s
    }
}
