#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import TestSupport
import TetherBoot
import Testing

/// `tether cp` and `tether fs` against a real sandbox (namespace backend, busybox guest, the
/// static agent as PID 1) through the relay its supervisor starts, as a user types them: the
/// guest's paths are the guest's own, and its users' permissions apply.
@Suite(.serialized) struct FilesSandboxTests {
    let home = Fixtures.temporaryDirectory("files")

    func tether(_ arguments: [String], standardInput: String? = nil) throws -> Fixtures.Output {
        try Fixtures.tether(arguments, home: home, standardInput: standardInput)
    }

    func sha256(_ path: String) throws -> String {
        String(try Fixtures.run(["/usr/bin/sha256sum", path]).stdout.prefix(64))
    }

    @Test(.timeLimit(.minutes(10)))
    func filesAndTreesCopyIntoAndOutOfARealSandbox() throws {
        try Fixtures.requireRoot()
        let rootfs = try Fixtures.rootfsCopy("files")
        defer { _ = try? tether(["stop", "fs", "--grace", "1s"]) }
        let boot = try tether(["boot", "--rootfs", rootfs, "--name", "fs"])
        try #require(boot.status == 0, "stderr: \(boot.stderr)")
        let local = home.appendingPathComponent("local").path
        try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)

        // A 32 MiB random file in and out; the guest's own sha256sum agrees.
        _ = try Fixtures.run(["/bin/sh", "-c", "head -c 32M /dev/urandom > '\(local)/blob'"])
        let up = try tether(["cp", "--no-progress", local + "/blob", "fs:/tmp/blob"])
        #expect(up.status == 0, "stderr: \(up.stderr)")
        let inGuest = try tether(["exec", "--sandbox", "fs", "--", "sha256sum", "/tmp/blob"])
        #expect(inGuest.stdout.hasPrefix(try sha256(local + "/blob")), "\(inGuest.stdout)\(inGuest.stderr)")
        let down = try tether(["cp", "--no-progress", "fs:/tmp/blob", local + "/back"])
        #expect(down.status == 0, "stderr: \(down.stderr)")
        #expect(try sha256(local + "/back") == sha256(local + "/blob"))

        // stdin to a guest file, and a guest file to stdout, with :PATH and --sandbox.
        let piped = try tether(["cp", "--sandbox", "fs", "-", ":/etc/motd"], standardInput: local + "/blob")
        #expect(piped.status == 0, "stderr: \(piped.stderr)")
        let cat = try tether(["fs", "--sandbox", "fs", "stat", "/etc/motd"])
        #expect(cat.stdout.contains("size: 33554432"), "\(cat.stdout)\(cat.stderr)")

        // A tree with modes, a symlink and an empty directory, into the guest and back.
        _ = try Fixtures.run(["/bin/sh", "-c", """
            mkdir -p '\(local)/tree/empty' '\(local)/tree/sub' && printf hi > '\(local)/tree/sub/a' &&
            chmod 600 '\(local)/tree/sub/a' && chmod 700 '\(local)/tree/empty' && ln -s sub/a '\(local)/tree/link'
            """])
        let treeUp = try tether(["cp", "--no-progress", local + "/tree", "fs:/tmp"])
        #expect(treeUp.status == 0, "stderr: \(treeUp.stderr)")
        let listing = try tether(["exec", "--sandbox", "fs", "--", "sh", "-c", "cd /tmp/tree && ls -ln sub/a && readlink link && ls -ld empty"])
        #expect(listing.stdout.contains("-rw-------"), "\(listing.stdout)")
        #expect(listing.stdout.contains("sub/a\n"), "\(listing.stdout)")
        #expect(listing.stdout.contains("drwx------"), "\(listing.stdout)")
        let treeDown = try tether(["cp", "--no-progress", "fs:/tmp/tree", local + "/tree-back"])
        #expect(treeDown.status == 0, "stderr: \(treeDown.stderr)")
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: local + "/tree-back/link")) == "sub/a")
        #expect(FileManager.default.fileExists(atPath: local + "/tree-back/empty"))

        // The guest's users and the guest's errors.
        let denied = try tether(["cp", "--no-progress", "-u", "sandbox", local + "/blob", "fs:/root/blob"])
        #expect(denied.status == 1)
        #expect(denied.stderr.contains("permissionDenied"), "\(denied.stderr)")
        let missing = try tether(["cp", "--no-progress", "fs:/no/such/file", local + "/x"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("fileNotFound"), "\(missing.stderr)")
        #expect(!FileManager.default.fileExists(atPath: local + "/x"))
        let json = try tether(["fs", "--sandbox", "fs", "--json", "rm", "/no/such/file"])
        #expect(json.status == 1)
        #expect(json.stderr.contains("\"code\":\"fileNotFound\""), "\(json.stderr)")
        let ls = try tether(["fs", "--sandbox", "fs", "ls", "/tmp/tree"])
        #expect(ls.stdout == "empty/\nlink\nsub/\n" || Set(ls.stdout.split(separator: "\n")) == ["empty/", "link", "sub/"], "\(ls.stdout)")
    }
}
