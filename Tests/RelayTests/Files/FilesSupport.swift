#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TestSupport
import TetherClient
import TetherProtocol
import Testing

/// What the files tests share: a real agent and a real relay (`LiveRelay`, with the static
/// release agent when there is one: a debug agent hashes a large file for minutes), and
/// helpers that look at the agent's file system directly (it is the host's here).
enum FilesSupport {
    static func relay(_ prefix: String = "files") throws -> LiveRelay {
        try LiveRelay(prefix, agentPath: GuestRoot.staticAgent)
    }

    /// Expects `body` to fail with the guest's `kind`; returns the error for more checks.
    @discardableResult
    static func expectFailure(_ kind: FileErrorKind, _ what: String, sourceLocation: SourceLocation = #_sourceLocation,
                              _ body: () async throws -> Void) async -> FsError? {
        do {
            try await body()
            Issue.record("\(what): expected \(kind), it succeeded", sourceLocation: sourceLocation)
        } catch {
            guard let fileError = error as? FileError, case .file(let failure) = fileError else {
                Issue.record("\(what): expected \(kind), got \(error)", sourceLocation: sourceLocation)
                return nil
            }
            #expect(failure.kind == kind, "\(what): \(failure)", sourceLocation: sourceLocation)
            return failure
        }
        return nil
    }

    static func shell(_ script: String) throws -> String {
        let result = try runCommand(["/bin/sh", "-c", script])
        guard result.status == 0 else { throw ClientError("\(script): status \(result.status): \(result.output)") }
        return result.output
    }

    static func sha256(_ path: String) throws -> String {
        String(try shell("sha256sum '\(path)'").prefix(64))
    }

    static func names(in directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
    }

    static func requireRoot() throws {
        if geteuid() != 0 { try Test.cancel("needs root (mounts, other users); this test process is uid \(geteuid())") }
    }

    /// Open descriptors of `pid` that point below `directory` (a transfer's file, or an
    /// O_TMPFILE shown as "/dir/#123 (deleted)").
    static func openFiles(of pid: Int32, below directory: String) -> [String] {
        let fdDirectory = "/proc/\(pid)/fd"
        return names(in: fdDirectory).compactMap { name in
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: fdDirectory + "/" + name)) ?? ""
            return target.hasPrefix(directory + "/") ? target : nil
        }
    }

    /// Polls `condition` for up to `seconds` (what the agent does after a client vanished
    /// happens on its own loop, after the relay noticed).
    static func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }
}

/// An async sequence of byte chunks for `write(contents:)`.
struct Chunks: AsyncSequence, Sendable {
    typealias Element = [UInt8]
    let chunks: [[UInt8]]
    struct AsyncIterator: AsyncIteratorProtocol {
        var rest: ArraySlice<[UInt8]>
        mutating func next() async -> [UInt8]? { rest.popFirst() }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(rest: chunks[...]) }
}
