#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

extension Sandboxes {
    /// Removes a stopped sandbox's directory: its state, logs and writable layer. A running
    /// sandbox is `nameConflict` (stop it first, or pass `stopFirst`).
    public func remove(_ name: String, stopFirst: Bool = false, graceMs: UInt64 = Supervisor.defaultGraceMs) throws(SandboxError) {
        guard SandboxName.isValid(name) else { throw .invalidName(name) }
        let paths = home.sandbox(name)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: paths.directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw .notRunning(name: name)
        }
        if NameLock.isHeld(paths.lock.path) {
            guard stopFirst else { throw .nameConflict(name: name, pid: SandboxState.load(from: paths.state)?.supervisorPid) }
            try stop(name, graceMs: graceMs)
        }
        // overlayfs leaves its work directory mode 000 (work/work): open every directory up
        // before removing, which an unprivileged owner needs (root does not).
        Self.makeRemovable(paths.directory.path)
        do {
            try FileManager.default.removeItem(at: paths.directory)
        } catch {
            throw .state(operation: "remove", path: paths.directory.path, message: "\(error)")
        }
    }

    static func makeRemovable(_ directory: String) {
        var pending = [directory]
        while let path = pending.popLast() {
            var st = stat()
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { continue }
            _ = chmod(path, 0o700)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] { pending.append(path + "/" + name) }
        }
    }
}
