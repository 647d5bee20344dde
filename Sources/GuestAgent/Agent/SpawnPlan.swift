#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSys
import TetherPosix
import TetherProtocol

/// Everything the fork child needs, checked and resolved before fork: the candidate paths for
/// argv[0], argv, the merged environment, the working directory, the user and the limits.
struct SpawnPlan {
    static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    var candidates: [[UInt8]]
    var argv: [[UInt8]]
    var environment: [[UInt8]]
    var cwd: [UInt8]?
    /// nil: keep the agent's credentials (no setgroups/setgid/setuid).
    var user: ResolvedUser?
    var rlimits: [csys_rlimit]
    /// For messages: argv[0] as text.
    var program: String

    /// Checks and resolves a request. `baseLimits` come first (the agent's own descriptor
    /// limit handed back to programs); the request's own limits follow and win.
    init(request: ExecRequest, users: UserDatabase, baseLimits: [csys_rlimit]) throws(SpawnFailure) {
        func bad(_ stage: SpawnStage, _ message: String) -> SpawnFailure {
            SpawnFailure(stage: stage, errno: EINVAL, message: message)
        }
        guard let first = request.argv.first else { throw bad(.argv, "argv is empty: there is no program to run") }
        program = first.description
        for (i, arg) in request.argv.enumerated() where arg.containsNUL {
            throw bad(.argv, "argv[\(i)] contains a NUL byte")
        }
        for (name, value) in request.env {
            if name.bytes.isEmpty || name.bytes.contains(UInt8(ascii: "=")) {
                throw bad(.env, "environment variable name '\(name)' is empty or contains '='")
            }
            if name.containsNUL || value.containsNUL { throw bad(.env, "environment variable '\(name)' contains a NUL byte") }
        }
        if let cwd = request.cwd {
            if cwd.containsNUL { throw bad(.cwd, "cwd contains a NUL byte") }
            if cwd.bytes.isEmpty { throw bad(.cwd, "cwd is empty") }
        }

        let home: String
        let userName: String
        if let spec = request.user {
            do {
                let resolved = try users.resolve(spec)
                user = resolved
                home = resolved.home
                userName = resolved.name
            } catch {
                switch error {
                case .invalidSyntax(let text):
                    throw bad(.user, "user '\(text)' is not name, uid, name:group or uid:gid")
                case .notFound(let what, let code):
                    throw SpawnFailure(stage: .user, errno: code.rawValue,
                                       message: "\(what) not found in the guest's /etc/passwd or /etc/group")
                }
            }
        } else {
            user = nil
            (userName, home) = users.identity(of: getuid())
        }

        var merged: [[UInt8]: [UInt8]] = [
            Array("PATH".utf8): Array(Self.defaultPath.utf8),
            Array("HOME".utf8): Array(home.utf8),
            Array("USER".utf8): Array(userName.utf8),
            Array("TERM".utf8): Array((request.tty == nil ? "dumb" : "xterm-256color").utf8),
        ]
        for (name, value) in request.env { merged[name.bytes] = value.bytes }
        environment = merged.sorted { $0.key.lexicographicallyPrecedes($1.key) }.map { $0.key + [UInt8(ascii: "=")] + $0.value }

        argv = request.argv.map(\.bytes)
        cwd = request.cwd?.bytes
        candidates = Self.candidates(for: first.bytes, path: merged[Array("PATH".utf8)] ?? [])

        rlimits = baseLimits
        for (name, limit) in request.rlimits.sorted(by: { $0.key < $1.key }) {
            let resource = csys_rlimit_resource(name)
            guard resource >= 0 else {
                throw bad(.rlimits, "unknown resource limit '\(name)' (known: nofile nproc as core cpu fsize stack data memlock rss nice rtprio msgqueue sigpending locks)")
            }
            // nil is unlimited: RLIM_INFINITY, all ones (the C macro does not import).
            rlimits.append(csys_rlimit(resource: resource, soft: limit.soft.map { rlim_t($0) } ?? rlim_t.max,
                                       hard: limit.hard.map { rlim_t($0) } ?? rlim_t.max))
        }
    }

    /// execvp(3)'s search: a name with a slash is used as it is; otherwise each PATH entry in
    /// turn, an empty entry meaning the working directory (the child's, after chdir).
    static func candidates(for program: [UInt8], path: [UInt8]) -> [[UInt8]] {
        if program.contains(UInt8(ascii: "/")) || program.isEmpty { return [program] }
        return path.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false).map { dir in
            dir.isEmpty ? program : Array(dir) + (dir.last == UInt8(ascii: "/") ? [] : [UInt8(ascii: "/")]) + program
        }
    }
}
