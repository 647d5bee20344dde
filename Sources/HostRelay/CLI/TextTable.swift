import Foundation

/// Rows as aligned columns: each column as wide as its widest cell, two spaces between, the
/// last column left as it is (a command line, a path: never padded). What `ps`, `ls`,
/// `port ls` and `proc ls` print. Cells are shown as given: callers escape what came from a
/// guest (`CommandLineText`).
enum TextTable {
    static func render(_ rows: [[String]]) -> String {
        guard let columns = rows.map(\.count).max(), columns > 0 else { return "" }
        var widths = [Int](repeating: 0, count: columns)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        var out = ""
        for row in rows {
            let cells = row.enumerated().map { i, cell in
                i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }
            out += cells.joined(separator: "  ") + "\n"
        }
        return out
    }
}
