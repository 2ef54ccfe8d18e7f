import Foundation

/// CSV text with RFC 4180 quoting: a field is quoted when it holds a comma,
/// a double quote, CR or LF, or starts/ends with a space; quotes inside are doubled.
public enum CSVExport {
    public static func field(_ s: String) -> String {
        var needs = false
        for u in s.utf8 where u == UInt8(ascii: ",") || u == UInt8(ascii: "\"") || u == 10 || u == 13 {
            needs = true; break
        }
        if !needs, let f = s.utf8.first, let l = s.utf8.last, f == 32 || l == 32 { needs = true }
        guard needs else { return s }
        return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    public static func line(_ fields: [String]) -> String {
        fields.map(field).joined(separator: ",") + "\n"
    }

    /// Shortest text that reads back as the same Float.
    public static func number(_ x: Float) -> String { x.isFinite ? "\(x)" : "nan" }

    /// The whole table: header line, then rows.
    public static func table(header: [String], rows: [[String]]) -> String {
        var out = line(header)
        for r in rows { out += line(r) }
        return out
    }
}
