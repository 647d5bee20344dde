#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TestSupport
import TetherClient
import TetherProtocol
import Testing

/// Every kind of `fsError`, each triggered for real (a full tmpfs, a read-only mount, another
/// user, a symlink loop, ...) through a real relay, with the operation, path and errno.
@Suite struct FilesErrorTests {
    @Test(.timeLimit(.minutes(5)))
    func everyFileErrorKindComesFromTheRealFileSystem() async throws {
        try FilesSupport.requireRoot()
        let live = try FilesSupport.relay("fserr")
        let files = try await live.client().files
        let dir = live.directory
        let file = try dir.write("file", "0123456789")
        let full = dir.file("full")
        let readOnly = dir.file("ro")
        for mount in [full, readOnly] { try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: false) }
        _ = try FilesSupport.shell("mount -t tmpfs -o size=1m tmpfs '\(full)' && mount -t tmpfs -o ro,size=1m tmpfs '\(readOnly)'")
        defer { _ = try? FilesSupport.shell("umount '\(full)'; umount '\(readOnly)'") }

        let missing = await FilesSupport.expectFailure(.fileNotFound, "stat of a missing file") {
            _ = try await files.stat(dir.file("missing"))
        }
        #expect(missing?.errno == ENOENT && missing?.path?.description == dir.file("missing") && missing?.op == "stat")
        await FilesSupport.expectFailure(.fileExists, "mkdir of an existing directory") { try await files.mkdir(dir.path) }
        await FilesSupport.expectFailure(.permissionDenied, "a write as nobody into root's 0700 directory") {
            try await client(files).files(as: "65534").write(dir.file("denied"), [1, 2, 3])
        }
        await FilesSupport.expectFailure(.isDirectory, "read of a directory") { _ = try await files.read(dir.path) }
        await FilesSupport.expectFailure(.isDirectory, "write over a directory") { try await files.write(full, [1]) }
        await FilesSupport.expectFailure(.notDirectory, "a path through a file") { _ = try await files.stat(file + "/below") }
        await FilesSupport.expectFailure(.directoryNotEmpty, "remove of a non-empty directory") {
            try await files.mkdir(dir.file("d/e"), parents: true)
            try await files.remove(dir.file("d"))
        }
        await FilesSupport.expectFailure(.fileTooLarge, "read over the caller's limit") { _ = try await files.read(file, limit: 4) }
        await FilesSupport.expectFailure(.fileTooLarge, "write over the caller's limit") {
            try await files.write(dir.file("limited"), [UInt8](repeating: 7, count: 100), FileWriteOptions(limit: 10))
        }
        let noSpace = await FilesSupport.expectFailure(.noSpace, "2 MiB into a 1 MiB tmpfs") {
            try await files.write(full + "/big", [UInt8](repeating: 1, count: 2 << 20))
        }
        #expect(noSpace?.errno == ENOSPC && noSpace?.op == "write")
        #expect(FilesSupport.names(in: full).isEmpty, "the full tmpfs holds \(FilesSupport.names(in: full))")
        await FilesSupport.expectFailure(.readOnly, "write on a read-only mount") { try await files.write(readOnly + "/x", [1]) }
        await FilesSupport.expectFailure(.readOnly, "mkdir on a read-only mount") { try await files.mkdir(readOnly + "/d") }
        await FilesSupport.expectFailure(.nameTooLong, "a 300-byte name") {
            _ = try await files.stat(dir.file(String(repeating: "n", count: 300)))
        }
        try await files.write(full + "/small", [1, 2, 3])
        await FilesSupport.expectFailure(.crossDevice, "rename across file systems") {
            try await files.rename(full + "/small", to: dir.file("moved"))
        }
        _ = try FilesSupport.shell("cd '\(dir.path)' && ln -s loop-b loop-a && ln -s loop-a loop-b")
        await FilesSupport.expectFailure(.tooManyLinks, "stat through a symlink loop") { _ = try await files.stat(dir.file("loop-a")) }
        await FilesSupport.expectFailure(.preconditionFailed, "ifAbsent over an existing file") {
            try await files.write(file, [1], FileWriteOptions(ifAbsent: true))
        }
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "0123456789")
        _ = try FilesSupport.shell("mkfifo '\(dir.file("fifo"))'")
        await FilesSupport.expectFailure(.invalidArgument, "a read of a FIFO (which would block the agent)") {
            _ = try await files.read(dir.file("fifo"))
        }
        #expect(try await files.stat(dir.file("fifo"), follow: false).type == .other)   // the agent still answers
        await FilesSupport.expectFailure(.invalidPath, "an empty path") { _ = try await files.stat("") }
        await FilesSupport.expectFailure(.invalidPath, "a NUL byte") { _ = try await files.stat("/tmp/a\u{0}b") }
        await FilesSupport.expectFailure(.userNotFound, "an unknown user") {
            _ = try await client(files).files(as: "no-such-user-here").stat("/")
        }
        await FilesSupport.expectFailure(.invalidPath, "an archive entry that leaves the directory") {
            var entry = TarWriter.header(TarEntry(name: Array("../escaped".utf8), type: .file, mode: 0o644, size: 1))
            entry += [UInt8(ascii: "x")] + TarWriter.padding(1) + TarWriter.trailer
            try await files.extract(dir.file("unpacked"), contents: Chunks(chunks: [entry]))
        }
        #expect(!FileManager.default.fileExists(atPath: dir.file("escaped")))
    }

    /// checksumMismatch and transferAborted come from what a client sends, so they are sent by
    /// hand, frame by frame, through the relay.
    @Test(.timeLimit(.minutes(2)))
    func aWrongChecksumOrACancelledWriteLeavesTheOldFile() throws {
        let live = try FilesSupport.relay("fserr")
        let path = try live.directory.write("target", "old\n")
        let peer = try FramePeer.connect(live.socketPath)
        try peer.send(id: 0, Hello(role: .client, name: "files-test", pid: getpid()))
        _ = try peer.expect(.hello, id: 0)

        let scope = FileScope(path: OSString(path))
        try peer.send(id: 1, flags: .start, FsWrite(scope, sha256: [UInt8](repeating: 0, count: 32)))
        try peer.send(Frame(id: 1, flags: .end, kind: .stdin, payload: Array("new\n".utf8)))
        let mismatch = try peer.receive(where: { $0.id == 1 && $0.kind == .fsError })
        #expect(mismatch.flags.contains(.end))
        #expect(try mismatch.decode(FsError.self).kind == .checksumMismatch)

        try peer.send(id: 2, flags: .start, FsWrite(scope))
        try peer.send(Frame(id: 2, kind: .stdin, payload: Array("half".utf8)))
        _ = try peer.expect(.ack, id: 2)
        try peer.send(id: 2, KillRequest())
        let aborted = try peer.receive(where: { $0.id == 2 && $0.kind == .fsError })
        #expect(try aborted.decode(FsError.self).kind == .transferAborted)

        #expect(try String(contentsOfFile: path, encoding: .utf8) == "old\n")
        #expect(FilesSupport.names(in: live.directory.path).filter { $0.hasPrefix(".target") }.isEmpty)
    }

    /// An upload's window is 1 MiB (PROTOCOL.md, section 8): the agent acks ahead as soon as it
    /// accepts the request, and a client may then send a whole MiB before the first write is
    /// acked, through the relay, which counts that ack like any other.
    @Test(.timeLimit(.minutes(2)))
    func anUploadMaySendOneMiBBeforeItsFirstWriteIsAcked() throws {
        let live = try FilesSupport.relay("fswin")
        let path = live.directory.path + "/upload"
        let peer = try FramePeer.connect(live.socketPath)
        try peer.send(id: 0, Hello(role: .client, name: "files-test", pid: getpid()))
        _ = try peer.expect(.hello, id: 0)

        try peer.send(id: 1, flags: .start, FsWrite(FileScope(path: OSString(path))))
        let ahead = try peer.expect(.ack, id: 1)
        #expect(try ahead.decode(Ack.self).bytes == UInt64(FlowControl.uploadWindowBytes - FlowControl.initialWindowBytes))
        let chunks = FlowControl.uploadWindowBytes / Frame.maxDataPayloadBytes
        for i in 0..<chunks {
            try peer.send(Frame(id: 1, flags: i == chunks - 1 ? .end : [], kind: .stdin,
                                payload: [UInt8](repeating: UInt8(i), count: Frame.maxDataPayloadBytes)))
        }
        let end = try peer.receive(where: { $0.id == 1 && $0.flags.contains(.end) })
        #expect(end.kind == .fsDone)
        #expect(try end.decode(FsDone.self).bytes == UInt64(FlowControl.uploadWindowBytes))
        let written = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(written.count == FlowControl.uploadWindowBytes)
        #expect(written.last == UInt8(chunks - 1))
    }

    /// The client of a `Files` (for a second view as another user).
    private func client(_ files: Files) -> TetherClient { files.client }
}
