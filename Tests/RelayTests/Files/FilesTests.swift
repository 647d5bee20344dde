#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import TetherPosix
import TestSupport
import TetherClient
import TetherProtocol
import Testing

/// `client.files` and `tether cp` through a real relay to a real agent: bytes, trees,
/// atomicity, watches.
@Suite struct FilesTests {
    /// 1 GiB, as the issue asks (about 17 s here: the checksums run on the CPU's SHA
    /// extensions); TETHER_FILES_TEST_MIB sets another size.
    static let largeMiB = Int(ProcessInfo.processInfo.environment["TETHER_FILES_TEST_MIB"] ?? "") ?? 1024

    @Test(.timeLimit(.minutes(15)))
    func aLargeRandomFileRoundTripsBothWaysWithEqualSHA256() throws {
        let live = try FilesSupport.relay()
        let dir = live.directory
        let source = dir.file("source")
        _ = try FilesSupport.shell("head -c \(Self.largeMiB)M /dev/urandom > '\(source)'")
        let up = try live.cli(["cp", "--no-progress", source, ":" + dir.file("in-guest")], timeout: 900)
        #expect(up.status == 0, "\(up)")
        let down = try live.cli(["cp", "--no-progress", ":" + dir.file("in-guest"), dir.file("back")], timeout: 900)
        #expect(down.status == 0, "\(down)")
        let expected = try FilesSupport.sha256(source)
        #expect(try FilesSupport.sha256(dir.file("in-guest")) == expected)
        #expect(try FilesSupport.sha256(dir.file("back")) == expected)
        // Neither side left a temporary file.
        #expect(FilesSupport.names(in: dir.path).filter { $0.contains(".tether") }.isEmpty, "\(FilesSupport.names(in: dir.path))")
    }

    @Test(.timeLimit(.minutes(5)))
    func theLibraryWritesAndReadsBytesWithModesAndStreams() async throws {
        let live = try FilesSupport.relay()
        let client = try await live.client()
        let files = client.files
        let path = live.directory.file("data.bin")
        let bytes = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 7) }
        let written = try await files.write(path, bytes, FileWriteOptions(mode: 0o640))
        #expect(written.bytes == UInt64(bytes.count))
        #expect(written.sha256 == SHA256.hash(bytes))
        #expect(try await files.read(path) == bytes)
        let info = try await files.stat(path)
        #expect(info.type == .file && info.size == UInt64(bytes.count) && info.mode == 0o640)

        // A stream of chunks, then a range of it, then appending.
        let streamed = try await files.write(path + ".2", contents: Chunks(chunks: [Array("hello ".utf8), Array("world\n".utf8)]))
        #expect(streamed.bytes == 12)
        let stream = try await files.readStream(path + ".2", offset: 6, length: 5)
        var part: [UInt8] = []
        while let chunk = try await stream.next() { part += chunk }
        #expect(String(decoding: part, as: UTF8.self) == "world")
        try await files.write(path + ".2", Array("again\n".utf8), FileWriteOptions(append: true))
        #expect(String(decoding: try await files.read(path + ".2"), as: UTF8.self) == "hello world\nagain\n")
        // Parents on request.
        try await files.write(live.directory.file("a/b/c.txt"), Array("deep".utf8), FileWriteOptions(parents: true))
        #expect(try String(contentsOfFile: live.directory.file("a/b/c.txt"), encoding: .utf8) == "deep")
    }

    @Test(.timeLimit(.minutes(5)))
    func statListMkdirRenameAndRemoveAsTheGuestSeesThem() async throws {
        let live = try FilesSupport.relay()
        let client = try await live.client()
        let files = client.files
        let root = live.directory.file("tree")
        try await files.mkdir(root + "/x/y", mode: 0o750, parents: true)
        try await files.mkdir(root + "/x/y", parents: true)   // exists: fine with parents
        #expect(try await files.stat(root + "/x/y").mode == 0o750)
        // 2,500 entries come back in pages of at most 1,000, none lost or repeated.
        _ = try FilesSupport.shell("cd '\(root)' && i=0; while [ $i -lt 2500 ]; do : > f$i; i=$((i+1)); done; ln -s f1 link")
        var pages = 0
        var names: [String] = []
        var cursor: [UInt8]?
        repeat {
            let page = try await files.listPage(root, limit: 1000, cursor: cursor)
            #expect(page.entries.count <= 1000)
            names += page.entries.map(\.name.description)
            cursor = page.nextCursor
            pages += 1
        } while cursor != nil
        #expect(pages >= 3)
        #expect(names.count == 2502 && Set(names).count == 2502)
        let recursive = try await files.list(root, recursive: true).map(\.name.description)
        #expect(recursive.contains("x/y") && recursive.count == 2503)
        let link = try await files.stat(root + "/link", follow: false)
        #expect(link.type == .symlink && link.target?.description == "f1")

        try await files.rename(root + "/f1", to: root + "/renamed")
        await FilesSupport.expectFailure(.fileExists, "rename onto an existing name") {
            try await files.rename(root + "/f2", to: root + "/renamed")
        }
        try await files.rename(root + "/f2", to: root + "/renamed", overwrite: true)
        #expect(try await files.exists(root + "/renamed"))
        #expect(try await !files.exists(root + "/f2"))
        try await files.setattr(root + "/renamed", mode: 0o600, uid: 1234, gid: 4321)
        let changed = try await files.stat(root + "/renamed")
        #expect(changed.mode == 0o600 && changed.uid == 1234 && changed.gid == 4321)
        await FilesSupport.expectFailure(.directoryNotEmpty, "remove a full directory without recursive") {
            try await files.remove(root + "/x")
        }
        try await files.remove(root, recursive: true)
        #expect(try await !files.exists(root))
    }

    @Test(.timeLimit(.minutes(5)))
    func anAtomicWriteKeepsTheTargetsModeAndOwnerUnlessGiven() async throws {
        let live = try FilesSupport.relay()
        let files = try await live.client().files
        let path = try live.directory.write("kept", "old\n", mode: 0o604)
        _ = try FilesSupport.shell("chown 1234:4321 '\(path)'")
        try await files.write(path, Array("new\n".utf8))
        var info = try await files.stat(path)
        #expect(info.mode == 0o604 && info.uid == 1234 && info.gid == 4321)
        try await files.write(path, Array("newer\n".utf8), FileWriteOptions(mode: 0o640, uid: 0, gid: 0))
        info = try await files.stat(path)
        #expect(info.mode == 0o640 && info.uid == 0 && info.gid == 0)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "newer\n")
    }

    @Test(.timeLimit(.minutes(10)))
    func aReaderRacingAThousandOverwritesNeverSeesATornFile() async throws {
        let live = try FilesSupport.relay()
        let files = try await live.client().files
        let path = live.directory.file("raced")
        let a = [UInt8](repeating: UInt8(ascii: "a"), count: 24 << 10)
        let b = [UInt8](repeating: UInt8(ascii: "b"), count: 40 << 10)
        try await files.write(path, a)
        let race = RaceCounters()
        let reader = Thread {
            while !race.done.load(ordering: .relaxed) {
                guard let data = FileManager.default.contents(atPath: path) else { continue }
                let bytes = [UInt8](data)
                if bytes != a && bytes != b { race.torn.add(1, ordering: .relaxed) }
                race.reads.add(1, ordering: .relaxed)
            }
            race.finished.store(true, ordering: .releasing)
        }
        reader.start()
        for i in 0..<1000 { try await files.write(path, i % 2 == 0 ? b : a) }
        race.done.store(true, ordering: .relaxed)
        #expect(FilesSupport.eventually { race.finished.load(ordering: .acquiring) })
        #expect(race.torn.load(ordering: .relaxed) == 0, "torn reads out of \(race.reads.load(ordering: .relaxed))")
        #expect(race.reads.load(ordering: .relaxed) > 0)
        #expect(FilesSupport.names(in: live.directory.path).filter { $0.hasPrefix(".raced") }.isEmpty)
    }

    @Test(.timeLimit(.minutes(5)))
    func aClientKilledMidWriteLeavesTheOldContentAndNoTemporaryFile() throws {
        let live = try FilesSupport.relay()
        let directory = live.directory.file("cut")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        let path = try live.directory.write("cut/target", "old content\n")
        let copy = try live.startCLI(["cp", "--no-progress", "-", ":" + path], stdin: true)
        copy.writeStdin(String(repeating: "new bytes that never land\n", count: 40_000))
        // The agent holds the half-written file open (an O_TMPFILE, or a named temporary).
        #expect(FilesSupport.eventually { !FilesSupport.openFiles(of: live.agent.pid, below: directory).isEmpty })
        copy.signal(SIGKILL)
        _ = copy.wait()
        // The relay saw the client go, killed the session; the agent dropped the transfer.
        #expect(FilesSupport.eventually { FilesSupport.openFiles(of: live.agent.pid, below: directory).isEmpty },
                "still open: \(FilesSupport.openFiles(of: live.agent.pid, below: directory))")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "old content\n")
        #expect(FilesSupport.names(in: directory) == ["target"])
    }

    @Test(.timeLimit(.minutes(5)))
    func aTreeWithModesSymlinksAndEmptyDirectoriesCopiesBothWays() throws {
        let live = try FilesSupport.relay()
        let dir = live.directory
        _ = try FilesSupport.shell("""
            cd '\(dir.path)' && mkdir -p src/empty src/sub/deeper && printf one > src/one && printf two > src/sub/two &&
            chmod 750 src/sub && chmod 600 src/one && chmod 711 src/empty && ln -s sub/two src/link &&
            head -c 300000 /dev/urandom > src/sub/deeper/blob && mkdir -p src/$(printf 'n%.0s' $(seq 1 120)) &&
            chown 1234:4321 src/sub/two
            """)
        let up = try live.cli(["cp", "-a", "--no-progress", dir.file("src"), ":" + dir.file("guest")])
        #expect(up.status == 0, "\(up)")
        let down = try live.cli(["cp", "-a", "--no-progress", ":" + dir.file("guest"), dir.file("back")])
        #expect(down.status == 0, "\(down)")
        let listing = "find . -printf '%p %y %m %U:%G %s %l\\n' | sort"
        let original = try FilesSupport.shell("cd '\(dir.file("src"))' && \(listing)")
        #expect(try FilesSupport.shell("cd '\(dir.file("guest"))' && \(listing)") == original)
        #expect(try FilesSupport.shell("cd '\(dir.file("back"))' && \(listing)") == original)
        #expect(try FilesSupport.sha256(dir.file("back/sub/deeper/blob")) == FilesSupport.sha256(dir.file("src/sub/deeper/blob")))
    }

    @Test(.timeLimit(.minutes(5)))
    func aWatchSeesCreateModifyDeleteAndMoveOfATree() async throws {
        let live = try FilesSupport.relay()
        let files = try await live.client().files
        let root = live.directory.file("watched")
        try FileManager.default.createDirectory(atPath: root + "/old", withIntermediateDirectories: true)
        let watch = try await files.watch(root, recursive: true, exclude: ["ignored"])
        // Should an event never come, the watch ends and the expectations below say which.
        let deadline = Task {
            try await Task.sleep(for: .seconds(60))
            watch.cancel()
        }
        defer { deadline.cancel() }
        var seen: [String] = []
        /// Runs a step in the tree, then reads events until `wanted` are all seen. One step at a
        /// time: a directory's watch exists once its `create` has arrived, not before.
        func step(_ script: String, _ wanted: [String]) async throws {
            _ = try FilesSupport.shell("cd '\(root)' && " + script)
            while !wanted.allSatisfy(seen.contains), let event = try await watch.next() {
                seen.append("\(event.type.rawValue) \(event.path)")
            }
            for event in wanted { #expect(seen.contains(event), "\(event) missing after `\(script)`: \(seen)") }
        }
        // A stat through the same agent orders the first step after the watch is in place.
        _ = try await files.stat(root)
        try await step("mkdir new", ["create new"])
        try await step("printf x > new/file && printf y >> new/file", ["create new/file", "modify new/file"])
        try await step("mv new/file new/moved", ["moveFrom new/file", "moveTo new/moved"])
        try await step("mkdir ignored && : > ignored/quiet && : > old/inner", ["create old/inner"])
        try await step("rm new/moved && chmod 700 old", ["delete new/moved", "attrib old"])
        watch.cancel()
        #expect(!seen.contains { $0.contains("ignored") }, "\(seen)")
        let moves = seen.filter { $0.hasPrefix("move") }
        #expect(moves.count == 2, "\(seen)")
        while try await watch.next() != nil {}   // ends after the cancel
    }
}

/// Shared between the racing reader thread and the test.
final class RaceCounters: Sendable {
    let done = Atomic(false)
    let finished = Atomic(false)
    let torn = Atomic(0)
    let reads = Atomic(0)
}
