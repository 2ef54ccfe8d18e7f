import Foundation
import IdxBase

/// A value of the TOML subset idx reads.
public enum TOMLValue: Equatable, CustomStringConvertible {
    case string(String)
    case integer(Int)
    case float(Double)
    case bool(Bool)
    case strings([String])

    public var description: String {
        switch self {
        case let .string(s): return "\"\(s)\""
        case let .integer(i): return String(i)
        case let .float(d): return String(d)
        case let .bool(b): return b ? "true" : "false"
        case let .strings(a): return "[" + a.map { "\"\($0)\"" }.joined(separator: ", ") + "]"
        }
    }

    var typeName: String {
        switch self {
        case .string: return "a string"
        case .integer: return "an integer"
        case .float: return "a number"
        case .bool: return "a boolean"
        case .strings: return "an array of strings"
        }
    }
}

/// The documented subset of TOML that `idx.toml` may use, parsed by hand so
/// idx needs no TOML package:
///
/// - `# comments` (to the end of the line, outside strings) and blank lines;
/// - `[section]` headers (bare names: letters, digits, `_`, `-`, `.`), each at most once;
/// - `key = value` with a bare key, each key at most once per section;
/// - values: `"basic strings"` (escapes `\" \\ \n \t \r \uXXXX`), `'literal strings'`,
///   integers (`42`, `-3`, `1_000`), floats (`0.01`, `1e-3`), `true` / `false`, and
///   arrays of strings `["a", 'b']`, which may span lines and end with a comma.
///
/// Anything else (inline tables, dates, multi-line strings, nested arrays) is
/// rejected with the file, line and what to do.
///
/// Kept rather than TOMLKit (in the package mirror): TOMLKit 0.6.0's toml++ aborts the process
/// on malformed input, in release builds too: a table header that does not start with a key
/// (`[=]`, `[.a]`, `[ÿ]`: `parse_key`'s precondition; upstream's fix, marzer/tomlplusplus#301,
/// came after 0.6.0) and an array holding a closing brace (`s=[}`: `parse_value`'s). A config
/// file must give an error, never a crash; this parser is fuzzed (`scripts/fuzz config`).
public struct TOMLDocument {
    /// Keys before any `[section]` live in the section named "".
    public private(set) var sections: [String: [String: TOMLValue]] = ["": [:]]
    /// The line each `section.key` was defined on (for error messages).
    public private(set) var lines: [String: Int] = [:]
    public let source: String

    public init(contentsOfFile path: String) throws {
        // A regular file of at most 1 MiB: a config path that is a FIFO or /dev/zero must not hang.
        guard let data = OutputPath.readSmallFile(path, limit: 1 << 20) else {
            let kind = FileKind(stat: path)
            let why = kind == .missing ? "it does not exist" : kind == .regular ? "it is larger than 1 MiB or unreadable" : "it is \(FileKind.describe(path)), not a regular file"
            throw IdxError("\(path): cannot read the config file: \(why); check the path (or pass --config).")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw IdxError("\(path): the config file is not UTF-8 text.")
        }
        try self.init(parsing: text, source: path)
    }

    public init(parsing text: String, source: String = "<config>") throws {
        self.source = source
        var section = ""
        var seenSections: Set<String> = [""]
        let rawLines = text.split(separator: "\n", omittingEmptySubsequences: false).map { Array($0.unicodeScalars) }
        var i = 0
        while i < rawLines.count {
            let lineNo = i + 1
            var s = Scanner(chars: rawLines[i], line: lineNo, source: source)
            i += 1
            s.skipSpace()
            if s.atEndOrComment { continue }
            if s.peek == "[" {
                s.advance()
                s.skipSpace()
                let name = s.bareName(allowDots: true)
                s.skipSpace()
                guard !name.isEmpty, s.peek == "]" else {
                    throw s.error("a section header must look like [name] (letters, digits, _ - .)")
                }
                s.advance()
                s.skipSpace()
                guard s.atEndOrComment else { throw s.error("unexpected text after the section header") }
                guard !seenSections.contains(name) else {
                    throw s.error("section [\(name)] appears twice; merge its keys into one section")
                }
                seenSections.insert(name)
                sections[name] = [:]
                section = name
                continue
            }
            let key = s.bareName(allowDots: false)
            guard !key.isEmpty else {
                throw s.error("expected `key = value` or `[section]`; keys are bare names (letters, digits, _ -)")
            }
            s.skipSpace()
            guard s.peek == "=" else { throw s.error("expected `=` after the key `\(key)`") }
            s.advance()
            s.skipSpace()
            let value: TOMLValue
            if s.peek == "[" {
                // An array of strings, possibly continued on the following lines.
                s.advance()
                var items: [String] = []
                var expectItem = true
                arrayLoop: while true {
                    s.skipSpace()
                    if s.atEndOrComment {
                        guard i < rawLines.count else { throw s.error("the array of `\(key)` is not closed with ]") }
                        s = Scanner(chars: rawLines[i], line: i + 1, source: source)
                        i += 1
                        continue
                    }
                    switch s.peek {
                    case "]":
                        s.advance()
                        break arrayLoop
                    case ",":
                        if expectItem { throw s.error("unexpected `,` in the array of `\(key)`") }
                        s.advance()
                        expectItem = true
                    case "\"", "'":
                        if !expectItem { throw s.error("expected `,` between the items of `\(key)`") }
                        items.append(try s.string())
                        expectItem = false
                    default:
                        throw s.error("arrays may only hold strings in idx.toml (`\(key)`); quote each item")
                    }
                }
                value = .strings(items)
            } else if s.peek == "\"" || s.peek == "'" {
                value = .string(try s.string())
            } else {
                let word = s.word()
                if word == "true" { value = .bool(true) }
                else if word == "false" { value = .bool(false) }
                else if let v = Self.number(word) { value = v }
                else if word.isEmpty { throw s.error("`\(key)` has no value") }
                else {
                    throw s.error("`\(word)` is not a value idx.toml understands: quote strings, write numbers plainly, true/false for booleans")
                }
            }
            s.skipSpace()
            guard s.atEndOrComment else { throw s.error("unexpected text after the value of `\(key)`") }
            if sections[section]![key] != nil {
                throw s.error("`\(key)` is set twice in \(section.isEmpty ? "the top level" : "[\(section)]")")
            }
            sections[section]![key] = value
            lines[section.isEmpty ? key : section + "." + key] = lineNo
        }
    }

    private static func number(_ word: String) -> TOMLValue? {
        guard let first = word.unicodeScalars.first, "+-0123456789.".unicodeScalars.contains(first) else { return nil }
        // Underscores only between digits.
        let scalars = Array(word.unicodeScalars)
        for (k, c) in scalars.enumerated() where c == "_" {
            guard k > 0, k + 1 < scalars.count,
                  CharacterSet.decimalDigits.contains(scalars[k - 1]),
                  CharacterSet.decimalDigits.contains(scalars[k + 1]) else { return nil }
        }
        let plain = word.replacingOccurrences(of: "_", with: "")
        if let i = Int(plain) { return .integer(i) }
        if plain.allSatisfy({ "+-0123456789.eE".contains($0) }), let d = Double(plain), d.isFinite {
            return .float(d)
        }
        return nil
    }

    /// The value of `key` in `section` ("" = top level), or nil.
    public func value(_ section: String, _ key: String) -> TOMLValue? { sections[section]?[key] }

    /// "file:line" of a key, for messages about a wrong value.
    public func location(_ section: String, _ key: String) -> String {
        let k = section.isEmpty ? key : section + "." + key
        if let l = lines[k] { return "\(source):\(l)" }
        return source
    }

    private struct Scanner {
        let chars: [Unicode.Scalar]
        var pos = 0
        let line: Int
        let source: String
        init(chars: [Unicode.Scalar], line: Int, source: String) {
            // Tolerate CRLF files.
            var c = chars
            if c.last == "\r" { c.removeLast() }
            self.chars = c
            self.line = line
            self.source = source
        }
        var peek: Unicode.Scalar? { pos < chars.count ? chars[pos] : nil }
        mutating func advance() { pos += 1 }
        var atEndOrComment: Bool { peek == nil || peek == "#" }
        mutating func skipSpace() { while let c = peek, c == " " || c == "\t" { pos += 1 } }
        func error(_ what: String) -> IdxError {
            IdxError("\(source):\(line): \(what).")
        }
        mutating func bareName(allowDots: Bool) -> String {
            var out = String.UnicodeScalarView()
            while let c = peek, CharacterSet.alphanumerics.contains(c) && c.isASCII || c == "_" || c == "-" || (allowDots && c == ".") {
                out.append(c); pos += 1
            }
            return String(out)
        }
        /// Up to whitespace, `,`, `]` or `#`.
        mutating func word() -> String {
            var out = String.UnicodeScalarView()
            while let c = peek, c != " ", c != "\t", c != ",", c != "]", c != "#" { out.append(c); pos += 1 }
            return String(out)
        }
        mutating func string() throws -> String {
            let quote = peek!
            advance()
            var out = String.UnicodeScalarView()
            while true {
                guard let c = peek else { throw error("the string is not closed with \(quote) on this line") }
                advance()
                if c == quote { return String(out) }
                if quote == "\"" && c == "\\" {
                    guard let e = peek else { throw error("a backslash ends the line inside a string") }
                    advance()
                    switch e {
                    case "\"": out.append("\"")
                    case "\\": out.append("\\")
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    case "r": out.append("\r")
                    case "u", "U":
                        let n = e == "u" ? 4 : 8
                        guard pos + n <= chars.count,
                              let v = UInt32(String(String.UnicodeScalarView(chars[pos ..< pos + n])), radix: 16),
                              let scalar = Unicode.Scalar(v) else {
                            throw error("\\\(e) must be followed by \(n) hex digits of a valid character")
                        }
                        pos += n
                        out.append(scalar)
                    default:
                        throw error("unknown escape \\\(e) in a string; write \\\\ for a backslash or use 'single quotes'")
                    }
                } else {
                    out.append(c)
                }
            }
        }
    }
}
