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
    /// 1 MiB chunks of pseudo-random bytes, `total` in all, cut from a pool made before the
    /// clock starts (8 MiB, so a 1 GiB transfer holds no more): the producer costs a copy per
    /// chunk, as `head -c` costs next to nothing in the ceiling it is compared with, instead of
    /// a generator running in the timed task. The pool's chunks start at offsets that do not
    /// repeat with the file's MiB boundaries: no two MiB of a file under 1.75 GiB are the same.
    struct RandomChunks: AsyncSequence, Sendable {
        typealias Element = [UInt8]
        static let chunk = 1 << 20
        static let pool = TetherMeasurements.pseudoRandomBytes(count: 8 << 20)
        let total: Int
        struct AsyncIterator: AsyncIteratorProtocol {
            var left: Int
            var index = 0
            mutating func next() async -> [UInt8]? {
                guard left > 0 else { return nil }
                let count = Swift.min(RandomChunks.chunk, left)
                left -= count
                let pool = RandomChunks.pool
                // A step of 1 MiB + 4 KiB through the pool, wrapping: 7 MiB of room for each start.
                let start = (index * (RandomChunks.chunk + 4096)) % (pool.count - RandomChunks.chunk)
                index += 1
                return Array(pool[start..<(start + count)])
            }
        }
        func makeAsyncIterator() -> AsyncIterator { AsyncIterator(left: total) }
    }

    /// host -> guest: `bytes` written to `path` (atomic write, SHA-256 checked by both ends).
    /// What the client, relay and agent spent is added to `cost`, if given.
    static func upload(_ client: TetherClient, path: String, bytes: Int, cost: TransferCost? = nil) async throws -> (ns: UInt64, sha256: [UInt8]) {
        _ = RandomChunks.pool   // made before the clock starts
        let mark = try cost?.mark()
        let start = Clock.monotonicNs()
        let result = try await client.files.write(path, contents: RandomChunks(total: bytes))
        let elapsed = Clock.monotonicNs() - start
        if let cost, let mark { try cost.add(since: mark) }
        guard result.bytes == UInt64(bytes) else { throw BenchError.shortRead(expected: bytes, got: Int(result.bytes)) }
        return (elapsed, result.sha256)
    }

    /// guest -> host: `path` streamed back; its digest must be the upload's. What the client,
    /// relay and agent spent is added to `cost`, if given.
    static func download(_ client: TetherClient, path: String, expected: [UInt8], cost: TransferCost? = nil) async throws -> UInt64 {
        let mark = try cost?.mark()
        let start = Clock.monotonicNs()
        let stream = try await client.files.readStream(path)
        var received = 0
        while let chunk = try await stream.next() { received += chunk.count }
        let elapsed = Clock.monotonicNs() - start
        if let cost, let mark { try cost.add(since: mark) }
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
