import Foundation

/// An error meant for the person at the terminal: `message` names the file,
/// the row or field, and what to do. The CLI prints it and exits non-zero.
public struct IdxError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension IdxError {
    /// `text` as it may appear in a message: control and non-ASCII bytes escaped (\n, \t, \xNN),
    /// cut to `limit` characters with "…" so that a 100 MB value or raw binary never reaches
    /// the terminal whole.
    public static func printable(_ text: String, limit: Int = 80) -> String {
        var out = ""
        var count = 0
        for b in text.utf8 {
            if count >= limit { return out + "…" }
            switch b {
            case 0x0A: out += "\\n"
            case 0x09: out += "\\t"
            case 0x0D: out += "\\r"
            case 0x20 ..< 0x7F: out.unicodeScalars.append(UnicodeScalar(b))
            default: out += String(format: "\\x%02X", b)
            }
            count += 1
        }
        return out
    }
}
