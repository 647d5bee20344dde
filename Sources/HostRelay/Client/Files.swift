import TetherPosix
import TetherProtocol

/// The sandbox's files (`fs/1`): `client.files.stat("/etc/hostname")`, `read`, `write`, `list`,
/// `mkdir`, `remove`, `rename`, `watch`. Calls act as `scope.user` (root by default); every
/// failure is a `FileError`, the guest's with kind, operation, path and errno.
///
/// Holds the client only; each call is one request session on its connection.
public struct Files: Sendable {
    public let client: TetherClient
    public let scope: FileScopeOptions

    init(client: TetherClient, scope: FileScopeOptions) {
        self.client = client
        self.scope = scope
    }

    /// The same files, as another user or from another directory.
    public func scoped(_ scope: FileScopeOptions) -> Files { Files(client: client, scope: scope) }

    func fileScope(_ path: String) -> FileScope {
        FileScope(path: OSString(path), cwd: scope.cwd.map { OSString($0) }, user: scope.user)
    }

    // MARK: one-turn requests

    public func stat(_ path: String, follow: Bool = true) async throws(FileError) -> FsInfo {
        let reply = try await request(FsStat(fileScope(path), follow: follow), op: "stat", path: path)
        return try decode(FsInfo.self, reply, op: "stat", path: path)
    }

    /// Whether something is at `path` (a dangling symlink counts).
    public func exists(_ path: String) async throws(FileError) -> Bool {
        do {
            _ = try await stat(path, follow: false)
            return true
        } catch {
            if error.kind == .fileNotFound { return false }
            throw error
        }
    }

    /// One page of a listing; pass its `nextCursor` for the next.
    public func listPage(_ path: String, recursive: Bool = false, limit: UInt32 = 1000, cursor: [UInt8]? = nil)
        async throws(FileError) -> FsEntries {
        let reply = try await request(FsList(fileScope(path), recursive: recursive, limit: limit, cursor: cursor), op: "list", path: path)
        return try decode(FsEntries.self, reply, op: "list", path: path)
    }

    /// Every entry, page after page.
    public func list(_ path: String, recursive: Bool = false) async throws(FileError) -> [FileEntry] {
        var entries: [FileEntry] = []
        var cursor: [UInt8]?
        repeat {
            let page = try await listPage(path, recursive: recursive, cursor: cursor)
            entries += page.entries
            cursor = page.nextCursor
        } while cursor != nil
        return entries
    }

    public func mkdir(_ path: String, mode: UInt32 = 0o755, parents: Bool = false) async throws(FileError) {
        _ = try await request(FsMkdir(fileScope(path), mode: mode, parents: parents), op: "mkdir", path: path)
    }

    public func remove(_ path: String, recursive: Bool = false) async throws(FileError) {
        _ = try await request(FsRemove(fileScope(path), recursive: recursive), op: "remove", path: path)
    }

    public func rename(_ from: String, to: String, overwrite: Bool = false) async throws(FileError) {
        _ = try await request(FsRename(fileScope(from), to: OSString(to), overwrite: overwrite), op: "rename", path: from)
    }

    public func setattr(_ path: String, mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil) async throws(FileError) {
        _ = try await request(FsSetattr(fileScope(path), mode: mode, uid: uid, gid: gid), op: "setattr", path: path)
    }

    // MARK: sessions

    /// Opens a request session; transient failures (the relay's agent not ready) are retried.
    func open<M: Message>(_ message: M, op: String, path: String) async throws(FileError) -> SessionChannel {
        do {
            return try await client.connection().startSession(kind: M.kind, payload: message.cborBytes, operation: op,
                                                              context: ["path": path])
        } catch { throw .client(error) }
    }

    /// A request answered by one frame (`fsDone`, `fsInfo`, `fsEntries`); an `fsError` throws.
    private func request<M: Message>(_ message: M, op: String, path: String) async throws(FileError) -> Frame {
        let outcome = await Self.retrying(client.options, op: op) { () async throws(FileError) -> Frame in
            let channel = try await open(message, op: op, path: path)
            var reply: Frame?
            do throws(TetherError) {
                while let item = try await channel.next() {
                    if case .reply(let frame) = item, reply == nil { reply = frame }
                }
            } catch { throw .client(error) }
            if case .failed(let error)? = channel.end { throw .client(error) }
            guard let reply else { throw .client(TetherError(.protocolError, "no reply to \(M.kind)", operation: op)) }
            try Self.throwIfFailed(reply, op: op)
            return reply
        }
        return try outcome.get()
    }

    /// Runs `body` again while it fails for a transient reason of the connection (the relay
    /// not there yet, its agent not ready: nothing reached the agent); the guest's answers,
    /// failures included, come back as they are.
    static func retrying<T>(_ options: ClientOptions, op: String, _ body: () async throws(FileError) -> T) async -> Result<T, FileError> {
        do throws(TetherError) {
            return try await Retry(options, operation: op).run { () async throws(TetherError) -> Result<T, FileError> in
                do throws(FileError) { return .success(try await body()) } catch {
                    if case .client(let client) = error { throw client }   // Retry decides whether it is transient
                    return .failure(error)
                }
            }
        } catch {
            return .failure(.client(error))
        }
    }

    /// An `fsError` reply as the error it is.
    static func throwIfFailed(_ frame: Frame, op: String) throws(FileError) {
        guard frame.kind == .fsError else { return }
        let failure: FsError
        do { failure = try frame.decode(FsError.self) } catch {
            throw .client(TetherError(.protocolError, "fsError: \(error.description)", operation: op))
        }
        throw .file(failure)
    }

    func decode<M: Message>(_ type: M.Type, _ frame: Frame, op: String, path: String) throws(FileError) -> M {
        guard frame.kind == M.kind else {
            throw .client(TetherError(.protocolError, "expected \(M.kind), got \(frame.kind)", operation: op, context: ["path": path]))
        }
        do { return try frame.decode(M.self) } catch {
            throw .client(TetherError(.protocolError, "\(M.kind): \(error.description)", operation: op, context: ["path": path]))
        }
    }
}

extension TetherClient {
    /// The sandbox's files, as root.
    public var files: Files { Files(client: self, scope: FileScopeOptions()) }

    /// The sandbox's files as `user`, relative paths from `cwd`.
    public func files(as user: String?, cwd: String? = nil) -> Files {
        Files(client: self, scope: FileScopeOptions(user: user, cwd: cwd))
    }
}
