import Testing
@testable import TetherProtocol

/// The failure enums shared by agent, relay, client and CLI: names on the wire, cases in code,
/// and names from a newer peer kept as they came.
@Suite struct FailureVocabularyTests {
    @Test func everyKnownNameDecodesToItsCase() {
        for code in ErrorCode.known { #expect(ErrorCode(rawValue: code.rawValue) == code) }
        for kind in SpawnFailureKind.known { #expect(SpawnFailureKind(rawValue: kind.rawValue) == kind) }
        for stage in SpawnStage.known { #expect(SpawnStage(rawValue: stage.rawValue) == stage) }
        #expect(Set(ErrorCode.known.map(\.rawValue)).count == ErrorCode.known.count)
        #expect(Set(SpawnStage.known.map(\.rawValue)).count == SpawnStage.known.count)
    }

    @Test func anUnknownNameSurvivesARoundTrip() throws {
        #expect(ErrorCode(rawValue: "quotaExceeded") == .unrecognized("quotaExceeded"))
        let failed = Failed(kind: SpawnFailureKind(rawValue: "noGPU"), errno: 19, stage: SpawnStage(rawValue: "gpuAttach"),
                            message: "no device")
        let decoded = try Frame(id: 1, kind: .failed, payload: failed.cborBytes).decode(Failed.self)
        #expect(decoded.kind == .unrecognized("noGPU"))
        #expect(decoded.stage == .unrecognized("gpuAttach"))
        #expect(decoded == failed)
    }

    @Test func theWireCarriesNames() {
        let failed = Failed(kind: .notFound, errno: 2, stage: .exec, message: "")
        let bytes = failed.cborBytes
        for name in ["kind", "notFound", "stage", "exec"] {
            // Each a CBOR text string: major type 3, the length in the initial byte.
            let text = [0x60 | UInt8(name.utf8.count)] + Array(name.utf8)
            #expect(bytes.indices.contains { bytes[$0...].starts(with: text) }, "\(name)")
        }
    }
}
