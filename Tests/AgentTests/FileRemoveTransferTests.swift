#if canImport(Glibc)
import Glibc
#endif
import Testing
import TestSupport
import TetherPosix
import TetherProtocol
@testable import TetherAgent

/// A tree removed recursively, a batch of entries per turn of the agent's loop.
@Suite struct FileRemoveTransferTests {
    struct Outcome {
        /// The frames the client got, in order.
        var replies: [Frame] = []
        /// Turns in which the loop served another ready descriptor before the removal ended.
        var otherTurns = 0
    }

    /// Removes `root` as the agent does, on a loop of its own with a link to a peer, beside a
    /// descriptor that is always ready (a pipe holding a byte nobody reads).
    func removeTree(_ root: String) throws -> Outcome {
        let loop = try EventLoop()
        var fds: [CInt] = [-1, -1]
        #expect(socketpair(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
        defer { close(fds[1]) }
        let link = FramedConnection(socket: try FrameSocket(adopting: OwnedFD(adopting: fds[0])), loop: loop)
        link.start()
        let ready = try Pipe()
        #expect(write(ready.writeEnd.raw, "x", 1) == 1)
        var outcome = Outcome()
        var ended = false
        try loop.watch(ready.readEnd.raw, events: EventLoop.readable) { _ in if !ended { outcome.otherTurns += 1 } }
        let transfer = try FileRemoveTransfer(id: 5, link: link, loop: loop, root: FilePath(OSString(root), cwd: nil),
                                              identity: FileIdentity(), user: nil, onEnd: {
                                                  ended = true
                                                  loop.stopping = true
                                              })
        _ = loop.schedule(after: .seconds(30)) { loop.stopping = true }
        try loop.run()
        withExtendedLifetime(transfer) {}
        loop.unwatch(ready.readEnd.raw)
        link.flush()
        var decoder = FrameDecoder()
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fds[1], $0.baseAddress, $0.count, CInt(MSG_DONTWAIT)) }
            guard n > 0 else { break }
            decoder.append(buffer[0..<n])
        }
        while let frame = try decoder.next() { outcome.replies.append(frame) }
        return outcome
    }

    @Test(.timeLimit(.minutes(1)))
    func aLargeTreeGoesOverSeveralTurnsWithTheLoopServingOthersBetween() async throws {
        let dir = try TemporaryDirectory("rmtree")
        let root = dir.file("tree")
        /// An empty file, its descriptor closed at once (other tests spawn children meanwhile).
        func touch(_ path: String) {
            let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
            #expect(fd >= 0)
            close(fd)
        }
        #expect(mkdir(root, 0o755) == 0)
        for d in 0..<10 {
            #expect(mkdir("\(root)/d\(d)", 0o755) == 0)
            #expect(mkdir("\(root)/d\(d)/deeper", 0o755) == 0)
            for f in 0..<100 { touch("\(root)/d\(d)/f\(f)") }
            touch("\(root)/d\(d)/deeper/last")
        }
        // A symlink out of the tree is removed, and what it names is not touched.
        try dir.write("outside/keep", "kept")
        #expect(symlink(dir.file("outside"), "\(root)/d0/link") == 0)
        // A large file goes to the reclaimer.
        let big = open("\(root)/d9/big", O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        #expect(posix_fallocate(big, 0, 16 << 20) == 0)
        close(big)
        let reclaimedBefore = FileReclaimer.closedCount.load(ordering: .acquiring)

        let outcome = try removeTree(root)

        #expect(access(root, F_OK) != 0, "the tree is gone")
        #expect(try String(contentsOfFile: dir.file("outside/keep"), encoding: .utf8) == "kept")
        #expect(outcome.replies.map(\.kind) == [.fsDone])
        #expect(outcome.replies.last?.flags.contains(.end) == true)
        // 1,000 files, 20 directories, the link and the big file: five batches at least, and the
        // loop's other descriptor was served between them.
        #expect(outcome.otherTurns >= 4)
        for _ in 0..<500 where FileReclaimer.closedCount.load(ordering: .acquiring) == reclaimedBefore {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(FileReclaimer.closedCount.load(ordering: .acquiring) > reclaimedBefore)
    }

    /// FS_IOC_SETFLAGS with FS_IMMUTABLE_FL on `path`, or off; false where the file system
    /// has no such flag.
    static func setImmutable(_ path: String, _ on: Bool) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var flags: CLong = on ? 0x10 : 0   // FS_IMMUTABLE_FL
        return ioctl(fd, 0x4008_6602, &flags) == 0   // FS_IOC_SETFLAGS
    }

    /// Whether /tmp's file system takes the immutable flag (ext4 does; tmpfs does not).
    static let immutableWorks: Bool = {
        guard let dir = try? TemporaryDirectory("rmflag"), let file = try? dir.write("probe", "x") else { return false }
        defer { _ = setImmutable(file, false) }
        return setImmutable(file, true)
    }()

    @Test(.timeLimit(.minutes(1)),
          .enabled(if: immutableWorks, "/tmp's file system has no immutable flag: nothing here can refuse root an unlink"))
    func aFailureMidwayEndsWithTheFsErrorAndLeavesWhatIsLeft() throws {
        let dir = try TemporaryDirectory("rmtree")
        let root = dir.file("tree")
        let stuck = try dir.write("tree/a/stuck", "x")
        try dir.write("tree/b/file", "y")
        #expect(Self.setImmutable(stuck, true))
        defer { _ = Self.setImmutable(stuck, false) }

        let outcome = try removeTree(root)

        #expect(outcome.replies.map(\.kind) == [.fsError])
        #expect(outcome.replies.last?.flags.contains(.end) == true)
        let failure = try #require(outcome.replies.first).decode(FsError.self)
        #expect(failure.errno == EPERM)
        #expect(failure.path?.description.hasSuffix("tree/a/stuck") == true)
        #expect(access(stuck, F_OK) == 0, "the file that could not go is still there")
    }
}
