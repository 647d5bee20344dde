#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TetherClient
import TetherPosix
import TetherProtocol

/// The files subsystem end to end (TetherClient -> relay -> agent): `cp` both ways as the
/// library streams it, and the round trip of one `fs.stat`. The bench's agent runs on this
/// machine, so its files are in a scratch directory here.
enum FileMeasurements {
    /// Pseudo-random chunks made as they are taken (a 1 GiB transfer does not hold 1 GiB).
    struct RandomChunks: AsyncSequence, Sendable {
        typealias Element = [UInt8]
        let total: Int
        let chunk = 1 << 20
        struct AsyncIterator: AsyncIteratorProtocol {
            var left: Int
            let chunk: Int
            var state: UInt64 = 0x9E37_79B9_7F4A_7C15
            mutating func next() async -> [UInt8]? {
                guard left > 0 else { return nil }
                let count = Swift.min(chunk, left)
                left -= count
                var bytes = [UInt8](repeating: 0, count: count)
                bytes.withUnsafeMutableBytes { raw in
                    let words = raw.baseAddress!.assumingMemoryBound(to: UInt64.self)
                    for i in 0..<(count / 8) {
                        state ^= state >> 12; state ^= state << 25; state ^= state >> 27
                        words[i] = state &* 0x2545_F491_4F6C_DD1D
                    }
                }
                return bytes
            }
        }
        func makeAsyncIterator() -> AsyncIterator { AsyncIterator(left: total, chunk: chunk) }
    }

    /// host -> guest: `bytes` written to `path` (atomic write, SHA-256 checked by both ends).
    static func upload(_ client: TetherClient, path: String, bytes: Int) async throws -> (ns: UInt64, sha256: [UInt8]) {
        let start = Clock.monotonicNs()
        let result = try await client.files.write(path, contents: RandomChunks(total: bytes))
        let elapsed = Clock.monotonicNs() - start
        guard result.bytes == UInt64(bytes) else { throw BenchError.shortRead(expected: bytes, got: Int(result.bytes)) }
        return (elapsed, result.sha256)
    }

    /// guest -> host: `path` streamed back; its digest must be the upload's.
    static func download(_ client: TetherClient, path: String, expected: [UInt8]) async throws -> UInt64 {
        let start = Clock.monotonicNs()
        let stream = try await client.files.readStream(path)
        var received = 0
        while let chunk = try await stream.next() { received += chunk.count }
        let elapsed = Clock.monotonicNs() - start
        guard stream.result?.sha256 == expected else {
            throw BenchError.failed("the file read back has another SHA-256 than the one written")
        }
        return elapsed
    }

    /// `fs.stat` of "/" answered by the agent, `count` times after a warm-up.
    static func statRoundTrip(_ client: TetherClient, count: Int) async throws -> Timings {
        for _ in 0..<min(100, count) { _ = try await client.files.stat("/") }
        var timings = Timings(reserving: count)
        for _ in 0..<count {
            let start = Clock.monotonicNs()
            _ = try await client.files.stat("/")
            timings.add(Clock.monotonicNs() - start)
        }
        return timings
    }
}
