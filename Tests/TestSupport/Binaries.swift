import Foundation

/// Locates what the build produced, for end-to-end tests that run real programs.
public enum Binaries {
    /// The repository's root (this file is Tests/TestSupport/Binaries.swift).
    public static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The directory holding the test runner, which is also where SwiftPM puts the products
    /// of the same build (`.build/debug` or whatever scratch path was used).
    public static let productsDirectory: URL = {
        let runner = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var dir = runner.deletingLastPathComponent()
        // `swift test` runs `<products>/TetherPackageTests.xctest` (a file on Linux).
        while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("tether-agent").path),
              dir.path != "/" {
            dir.deleteLastPathComponent()
        }
        return dir.path == "/" ? runner.deletingLastPathComponent() : dir
    }()

    /// A product of this build (`tether-agent`, `tether`, ...).
    public static func product(_ name: String) -> URL { productsDirectory.appendingPathComponent(name) }
}
