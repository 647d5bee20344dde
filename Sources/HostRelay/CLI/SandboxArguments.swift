import TetherPosix

/// Reads `--option value`, `--option=value`, positional arguments between them, and a `--`
/// after which everything is positional. With `stopAtPositional` (a command to run follows),
/// the first positional argument ends the options too.
struct SandboxArguments {
    private var arguments: ArraySlice<String>
    private var inlineValue: String?
    private let stopAtPositional: Bool
    /// The positional arguments, in order (what follows `--` included).
    private(set) var remaining: [String] = []

    init(_ arguments: [String], stopAtPositional: Bool = false) {
        self.arguments = arguments[...]
        self.stopAtPositional = stopAtPositional
    }

    /// The next option name, or nil at the end of the options.
    mutating func nextOption() throws -> String? {
        inlineValue = nil
        while let argument = arguments.first {
            if argument == "--" {
                arguments.removeFirst()
                remaining += arguments
                arguments = []
                return nil
            }
            guard argument.hasPrefix("-"), argument != "-" else {
                if stopAtPositional {
                    remaining += arguments
                    arguments = []
                    return nil
                }
                remaining.append(argument)
                arguments.removeFirst()
                continue
            }
            arguments.removeFirst()
            if argument.hasPrefix("--"), let equals = argument.firstIndex(of: "=") {
                inlineValue = String(argument[argument.index(after: equals)...])
                return String(argument[..<equals])
            }
            return argument
        }
        return nil
    }

    mutating func value(for option: String) throws -> String {
        if let inlineValue {
            self.inlineValue = nil
            return inlineValue
        }
        guard let value = arguments.popFirst() else { throw UsageError("\(option) needs a value") }
        return value
    }

    mutating func integer(for option: String, in range: ClosedRange<Int>) throws -> Int {
        let text = try value(for: option)
        guard let number = Int(text), range.contains(number) else {
            throw UsageError("\(option) takes a number from \(range.lowerBound) to \(range.upperBound), not '\(text)'")
        }
        return number
    }

    /// 500ms, 10s, 2m, 1h, or a plain number of seconds (`parseDuration`); in milliseconds.
    mutating func duration(for option: String) throws -> UInt64 {
        let text = try value(for: option)
        do { return try parseDuration(text, option: option, command: nil).milliseconds } catch {
            throw UsageError("\(option) takes a duration such as 500ms, 10s or 2m, not '\(text)'")
        }
    }
}
