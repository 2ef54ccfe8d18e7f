/// Hugging Face's `Whitespace` pre-tokenizer (`\w+|[^\w\s]+`) on bytes: maximal runs
/// of word bytes, or of bytes that are neither word nor space. Word = `A-Za-z0-9_`
/// and, so that UTF-8 letters stay inside words, every byte >= 0x80 (cleaned text
/// is ASCII, so this only matters for text that skipped the cleaning).
enum PreTokenizer {
    static let space: UInt8 = 0, word: UInt8 = 1, punct: UInt8 = 2

    static let classes: [UInt8] = {
        var t = [UInt8](repeating: punct, count: 256)
        for c in UInt8(ascii: "A") ... UInt8(ascii: "Z") { t[Int(c)] = word }
        for c in UInt8(ascii: "a") ... UInt8(ascii: "z") { t[Int(c)] = word }
        for c in UInt8(ascii: "0") ... UInt8(ascii: "9") { t[Int(c)] = word }
        t[Int(UInt8(ascii: "_"))] = word
        for c in 0x80 ... 0xFF { t[c] = word }
        for c: UInt8 in [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20] { t[Int(c)] = space }
        return t
    }()

    /// Calls `body(start, length)` for each pre-token of `p[0 ..< n]`.
    @inline(__always)
    static func forEach(_ p: UnsafePointer<UInt8>, _ n: Int, _ body: (Int, Int) -> Void) {
        classes.withUnsafeBufferPointer { cls in
            var i = 0
            while i < n {
                let c = cls[Int(p[i])]
                if c == space { i += 1; continue }
                let start = i
                i += 1
                while i < n && cls[Int(p[i])] == c { i += 1 }
                body(start, i - start)
            }
        }
    }
}
