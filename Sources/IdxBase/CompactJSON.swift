import Foundation

/// Compact JSON text, byte for byte what Foundation's
/// `JSONSerialization.data(withJSONObject:options: [.sortedKeys, .withoutEscapingSlashes])`
/// writes on Linux (the format `idx search --json` prints), for the values idx writes:
/// String, Bool, the integer types, Double and Float, NSNull, arrays and [String: Any].
/// Foundation's writer appends one small String per escaped scalar and compares keys through
/// ICU collation on every object; this one appends UTF-8 bytes and sorts each distinct key
/// set once, with Foundation's comparator. idx serve writes every answer with it.
public enum CompactJSON {
    /// A value that writes its own JSON (the bytes `write` would write for its dictionary
    /// form), for what is written once per hit of every answer.
    public protocol Writable {
        func writeJSON(into out: inout [UInt8]) throws
    }

    public static func data(_ value: Any) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(4096)
        try write(value, into: &out)
        return out
    }

    public static func write(_ value: Any, into out: inout [UInt8]) throws {
        if type(of: value) is NSNumber.Type {
            // An NSNumber (as JSONSerialization reads numbers) casts to Bool and to Int alike:
            // Foundation's writer knows which it holds.
            return try foundation(value, into: &out)
        }
        switch value {
        case let w as Writable: try w.writeJSON(into: &out)
        case let s as String: string(s, into: &out)
        case let b as Bool: out.append(contentsOf: (b ? "true" : "false").utf8)
        case let n as Int: out.append(contentsOf: n.description.utf8)
        case let n as Int64: out.append(contentsOf: n.description.utf8)
        case let n as Int32: out.append(contentsOf: n.description.utf8)
        case let n as UInt64: out.append(contentsOf: n.description.utf8)
        case let n as UInt32: out.append(contentsOf: n.description.utf8)
        case let n as UInt16: out.append(contentsOf: n.description.utf8)
        case let n as UInt8: out.append(contentsOf: n.description.utf8)
        case let a as [Any]:
            out.append(UInt8(ascii: "["))
            for (i, e) in a.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                try write(e, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case let d as [String: Any]:
            out.append(UInt8(ascii: "{"))
            for (i, key) in sortedKeys(d).enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                string(key, into: &out)
                out.append(UInt8(ascii: ":"))
                try write(d[key]!, into: &out)
            }
            out.append(UInt8(ascii: "}"))
        case let x as Float: try float(x, into: &out)
        case let x as Double: try float(x, into: &out)
        case is NSNull: out.append(contentsOf: "null".utf8)
        default: try foundation(value, into: &out)
        }
    }

    /// Foundation's own writer, for a value this one does not know, as an array of one.
    static func foundation(_ value: Any, into out: inout [UInt8]) throws {
        let data = try JSONSerialization.data(withJSONObject: [value], options: [.sortedKeys, .withoutEscapingSlashes])
        out.append(contentsOf: data.dropFirst().dropLast())
    }

    /// Shortest round-trip decimal, without a trailing ".0" (as Foundation writes it).
    public static func float<T: FloatingPoint & LosslessStringConvertible>(_ x: T, into out: inout [UInt8]) throws {
        guard x.isFinite else { throw IdxError("JSON: \(x) is not a number JSON can hold.") }
        var text = x.description
        if text.hasSuffix(".0") { text.removeLast(2) }
        out.append(contentsOf: text.utf8)
    }

    public static func string(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        // Most text needs no escape: then its bytes are copied at once.
        let plain = s.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
            guard !bytes.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else { return false }
            out.append(contentsOf: bytes)
            return true
        } ?? false
        if plain {
            out.append(UInt8(ascii: "\""))
            return
        }
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [92, 34])
            case UInt8(ascii: "\\"): out.append(contentsOf: [92, 92])
            case 0x08: out.append(contentsOf: [92, UInt8(ascii: "b")])
            case 0x0C: out.append(contentsOf: [92, UInt8(ascii: "f")])
            case 0x0A: out.append(contentsOf: [92, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [92, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [92, UInt8(ascii: "t")])
            case 0 ..< 0x20:
                // \u00XX with lower-case hex digits, as Foundation writes them.
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: [92, UInt8(ascii: "u"), 48, 48, hex[Int(byte >> 4)], hex[Int(byte & 15)]])
            default: out.append(byte) // UTF-8 passes through; '/' is not escaped
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    private static let lock = NSLock()
    // Unsafe is sound here: every access holds `lock`.
    nonisolated(unsafe) private static var keyOrders: [String: [String]] = [:]

    /// The keys in Foundation's `.sortedKeys` order (numeric, case-insensitive, forced ordering,
    /// system locale), computed once per distinct key set.
    static func sortedKeys(_ d: [String: Any]) -> [String] {
        let plain = d.keys.sorted()
        let cacheKey = plain.joined(separator: "\u{0}")
        if let known = lock.withLock({ keyOrders[cacheKey] }) { return known }
        let ordered = plain.sorted {
            $0.compare($1, options: [.numeric, .caseInsensitive, .forcedOrdering], range: $0.startIndex ..< $0.endIndex,
                       locale: NSLocale.system as Locale) == .orderedAscending
        }
        lock.withLock { if keyOrders.count < 1024 { keyOrders[cacheKey] = ordered } }
        return ordered
    }
}
