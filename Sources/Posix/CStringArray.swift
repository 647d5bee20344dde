#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// NUL-terminated copies of byte strings and a NULL-terminated array of pointers to them, in
/// one allocation, for a C call that must not allocate (the fork child, execve(2)). Freed on
/// deinit; a forked child has its own copy of the memory, so the parent frees it right after
/// fork.
public final class CStringArray {
    public let pointers: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
    public let count: Int
    private let storage: UnsafeMutableRawPointer

    /// The strings must not contain NUL (a string is cut at its first NUL otherwise).
    public init(_ strings: [[UInt8]]) {
        count = strings.count
        let pointerBytes = (strings.count + 1) * MemoryLayout<UnsafeMutablePointer<CChar>?>.stride
        let textBytes = strings.reduce(0) { $0 + $1.count + 1 }
        storage = UnsafeMutableRawPointer.allocate(byteCount: pointerBytes + textBytes,
                                                  alignment: MemoryLayout<UnsafeMutablePointer<CChar>?>.alignment)
        pointers = storage.bindMemory(to: UnsafeMutablePointer<CChar>?.self, capacity: strings.count + 1)
        var text = (storage + pointerBytes).bindMemory(to: CChar.self, capacity: textBytes)
        for (i, string) in strings.enumerated() {
            pointers[i] = text
            string.withUnsafeBytes { raw in
                if raw.count > 0 { UnsafeMutableRawPointer(text).copyMemory(from: raw.baseAddress!, byteCount: raw.count) }
            }
            text[string.count] = 0
            text += string.count + 1
        }
        pointers[strings.count] = nil
    }

    /// Strings as their UTF-8 bytes.
    public convenience init(_ strings: [String]) { self.init(strings.map { Array($0.utf8) }) }

    deinit { storage.deallocate() }

    /// `strings` as a NULL-terminated `const char *const[]`, valid inside `body` only.
    public static func with<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
        let array = CStringArray(strings)
        return withExtendedLifetime(array) { body(array.constPointers) }
    }

    /// The same pointers typed as `const char *const *`.
    public var constPointers: UnsafePointer<UnsafePointer<CChar>?> {
        UnsafeRawPointer(pointers).assumingMemoryBound(to: UnsafePointer<CChar>?.self)
    }
}
