#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
@testable import TetherBoot

/// The id maps a sandbox gets, apart from booting one (ConfinementTests boots them).
@Suite struct UserNamespaceTests {
    @Test func subordinateRangesAreFoundByTheUsersNameOrUidInBothFiles() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("subid-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // newgidmap reads /etc/subgid by the user, never by its group: "nogroup" must not match.
        let subgid = directory.appendingPathComponent("subgid").path
        try "nogroup:100000:65536\nnobody:300000:65536\n".write(toFile: subgid, atomically: false, encoding: .utf8)
        let range = UserNamespace.subordinate(subgid, user: 65534)
        #expect(range?.start == 300_000 && range?.count == 65_536, "\(String(describing: range))")
        let byUID = directory.appendingPathComponent("subuid").path
        try "# comment\nbad line\n65534:400000:1000\n".write(toFile: byUID, atomically: false, encoding: .utf8)
        let numeric = UserNamespace.subordinate(byUID, user: 65534)
        #expect(numeric?.start == 400_000 && numeric?.count == 1_000)
        #expect(UserNamespace.subordinate(byUID, user: 12345) == nil)
    }

    @Test func aRootRunSandboxGetsOneWholeSlotOfTheReservedBlock() {
        let mapping = IDMapping.slot(7)
        #expect(mapping.rootUID == 0x6000_0000 + 7 * 65_536)
        #expect(mapping.uids == [IDMapping.Range(inside: 0, outside: 0x6000_0000 + 7 * 65_536, count: 65_536)])
        #expect(mapping.mapsTTYGroup && !mapping.denySetgroups)
        #expect(IDMapping.text(mapping.uids) == "0 \(0x6000_0000 + 7 * 65_536) 65536\n")
        // The last slot still ends below 0x7000_0000.
        #expect(IDMapping.slot(IDMapping.slotCount - 1).rootUID + IDMapping.slotSize <= 0x7000_0000)
    }

    @Test func aSlotIsLockedForOneHolderAtATime() throws {
        guard geteuid() == 0 else { try Test.cancel("needs root: slot locks live in /run/tether/idmap") }
        let first = try SlotLock.acquire(preferred: 4000)
        let second = try SlotLock.acquire(preferred: first.slot)
        #expect(second.slot != first.slot, "two holders got slot \(first.slot)")
    }
}
