#if canImport(Glibc)
import Glibc
#endif
import Testing
import TestSupport
import TetherProtocol
@testable import TetherAgent

/// Large files the agent removes or replaces are freed on the reclaimer's thread: the loop
/// thread only drops a link, and the reclaimer's close(2) drops the last reference.
@Suite struct FileReclaimerTests {
    /// A file with `bytes` allocated (fallocate: real blocks, as written data would hold).
    func allocatedFile(_ path: String, bytes: Int) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        #expect(fd >= 0)
        defer { close(fd) }
        #expect(posix_fallocate(fd, 0, off_t(bytes)) == 0)
    }

    /// Waits (up to 10 s) until the reclaimer has closed more than `count` descriptors.
    func reclaimerClosed(moreThan count: Int) async throws -> Bool {
        for _ in 0..<1000 {
            if FileReclaimer.closedCount.load(ordering: .acquiring) > count { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    @Test func onlyLargeRegularFilesArePinned() throws {
        let dir = try TemporaryDirectory("reclaim")
        try allocatedFile(dir.file("big"), bytes: 16 << 20)
        try allocatedFile(dir.file("small"), bytes: 64 << 10)
        #expect(symlink(dir.file("big"), dir.file("link")) == 0)
        #expect(mkdir(dir.file("sub"), 0o755) == 0)
        let pin = FileReclaimer.pin(dir.file("big"))
        #expect(pin != nil)
        if let pin { close(pin) }
        #expect(FileReclaimer.pin(dir.file("small")) == nil)
        // The link itself, not the file it names.
        #expect(FileReclaimer.pin(dir.file("link")) == nil)
        #expect(FileReclaimer.pin(dir.file("sub")) == nil)
        #expect(FileReclaimer.pin(dir.file("missing")) == nil)
    }

    @Test(.timeLimit(.minutes(1)))
    func aPinnedFileOutlivesItsLastLinkUntilTheReclaimerClosesIt() async throws {
        let dir = try TemporaryDirectory("reclaim")
        try allocatedFile(dir.file("big"), bytes: 16 << 20)
        let pin = try #require(FileReclaimer.pin(dir.file("big")))
        #expect(unlink(dir.file("big")) == 0)
        // Unlinked, but still there with its blocks: nothing was freed by the unlink.
        var st = stat()
        #expect(fstat(pin, &st) == 0)
        #expect(st.st_nlink == 0)
        #expect(Int(st.st_blocks) * 512 >= 16 << 20)
        let before = FileReclaimer.closedCount.load(ordering: .acquiring)
        FileReclaimer.release(pin)
        #expect(try await reclaimerClosed(moreThan: before))
    }

    /// (A tree removed recursively: FileRemoveTransferTests.)
    @Test(.timeLimit(.minutes(1)))
    func removingOrReplacingALargeFileHandsItToTheReclaimer() async throws {
        let dir = try TemporaryDirectory("reclaim")
        try allocatedFile(dir.file("big"), bytes: 16 << 20)
        var before = FileReclaimer.closedCount.load(ordering: .acquiring)
        try FileOperations.remove(FilePath(OSString(dir.file("big")), cwd: nil))
        #expect(access(dir.file("big"), F_OK) != 0)
        #expect(try await reclaimerClosed(moreThan: before))

        // Replaced by a rename: the new file is in place, the old one goes to the reclaimer.
        try allocatedFile(dir.file("old"), bytes: 16 << 20)
        try dir.write("new", "new contents")
        before = FileReclaimer.closedCount.load(ordering: .acquiring)
        try FileOperations.rename(FilePath(OSString(dir.file("new")), cwd: nil), to: FilePath(OSString(dir.file("old")), cwd: nil),
                                  overwrite: true)
        #expect(try String(contentsOfFile: dir.file("old"), encoding: .utf8) == "new contents")
        #expect(try await reclaimerClosed(moreThan: before))
    }
}
