import Foundation
import IdxBase

/// A word-level tokenizer identical to Hugging Face tokenizers' `WordLevel` model with
/// the `Whitespace` pre-tokenizer and the `[BOS] $A [EOS]` template, read from and
/// written as the same `tokenizer.json`; with `lowercase`, HF's `Lowercase` normalizer first
/// (the text is ASCII after cleaning, so lowering its bytes is HF's Unicode lowering).
public struct WordLevelTokenizer: Sendable {
    /// Typed queries are lower-case and synopses are not: a case-folded vocabulary reads
    /// "robot" and "Robot" as one word, and frees the entries case variants took.
    public let lowercase: Bool
    /// id -> word bytes.
    private(set) var words: [[UInt8]]
    private var table: WordTable
    /// The tokenizer.json bytes (as written by idx or read from disk).
    public let json: [UInt8]
    public let hash: String

    public var vocabSize: Int { words.count }

    /// Loads a Hugging Face `tokenizer.json` (model WordLevel, pre-tokenizer Whitespace).
    public init(contentsOfFile path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw IdxError("\(path): cannot read the tokenizer; check the path, or run `idx ingest` to train one.")
        }
        try self.init(jsonBytes: [UInt8](data), source: path)
    }

    public init(jsonBytes: [UInt8], source: String) throws {
        guard let root = (try? JSONSerialization.jsonObject(with: Data(jsonBytes))) as? [String: Any],
              let model = root["model"] as? [String: Any] else {
            throw IdxError("\(source): not a tokenizer.json (no \"model\" object).")
        }
        guard model["type"] as? String == "WordLevel", let vocab = model["vocab"] as? [String: Any] else {
            throw IdxError("\(source): the model is \(model["type"] ?? "unknown"), idx reads only WordLevel tokenizers.")
        }
        var lowercase = false
        if let normalizer = root["normalizer"] as? [String: Any] {
            guard normalizer["type"] as? String == "Lowercase" else {
                throw IdxError("\(source): the normalizer is \(normalizer["type"] ?? "unknown"), idx implements only Lowercase (or none).")
            }
            lowercase = true
        }
        if let pre = root["pre_tokenizer"] as? [String: Any], pre["type"] as? String != "Whitespace" {
            throw IdxError("\(source): the pre-tokenizer is \(pre["type"] ?? "unknown"), idx implements only Whitespace.")
        }
        var byId = [[UInt8]?](repeating: nil, count: vocab.count)
        for (word, idValue) in vocab {
            guard let id = (idValue as? NSNumber)?.intValue, id >= 0, id < vocab.count, byId[id] == nil else {
                throw IdxError("\(source): vocabulary ids must be 0..<\(vocab.count), each used once (\"\(word)\").")
            }
            byId[id] = Array(word.utf8)
        }
        let words = byId.map { $0! }
        for (i, name) in SpecialToken.names.enumerated() where i >= words.count || words[i] != Array(name.utf8) {
            throw IdxError("\(source): id \(i) must be \(name) (idx's special tokens are \(SpecialToken.names.joined(separator: " ")) = 0...4).")
        }
        if let unk = model["unk_token"] as? String, unk != "[UNK]" {
            throw IdxError("\(source): unk_token is \(unk), idx needs [UNK].")
        }
        self.init(words: words, lowercase: lowercase, json: jsonBytes)
    }

    /// A tokenizer with the given vocabulary (ids = positions; the five specials first).
    init(words: [[UInt8]], lowercase: Bool = false, json: [UInt8]? = nil) {
        self.words = words
        self.lowercase = lowercase
        var table = WordTable(capacity: words.count)
        for (id, w) in words.enumerated() { _ = table.insert(w, value: Int64(id)) }
        self.table = table
        let bytes = json ?? Self.huggingFaceJSON(words, lowercase: lowercase)
        self.json = bytes
        hash = XXHash64.hex(XXHash64.hash(bytes))
    }

    public func token(_ id: Int32) -> String {
        guard id >= 0 && Int(id) < words.count else { return "[UNK]" }
        return String(decoding: words[Int(id)], as: UTF8.self)
    }

    /// Ids of cleaned text, without [BOS]/[EOS]. Unknown words are [UNK].
    public func encode(_ cleanedText: String) -> [Int32] {
        var ids = [Int32]()
        var text = cleanedText
        text.withUTF8 { b in
            if let p = b.baseAddress { _ = encode(p, b.count, into: &ids) }
        }
        return ids
    }

    /// Query path: the cleaning rules without the length drop, then `encode`.
    public func encodeQuery(_ rawText: String) -> [Int32] {
        encode(Cleaning.cleanKeepingShort(rawText))
    }

    /// Appends the ids of `p[0 ..< n]` to `ids`; returns how many were [UNK].
    @inline(__always)
    func encode(_ p: UnsafePointer<UInt8>, _ n: Int, into ids: inout [Int32]) -> Int {
        if lowercase {
            return LowercaseBytes.with(p, n) { encodeAsIs($0, n, into: &ids) }
        }
        return encodeAsIs(p, n, into: &ids)
    }

    @inline(__always)
    private func encodeAsIs(_ p: UnsafePointer<UInt8>, _ n: Int, into ids: inout [Int32]) -> Int {
        var unknown = 0
        PreTokenizer.forEach(p, n) { start, length in
            let e = table.find(p + start, length)
            if e < 0 { ids.append(SpecialToken.unk); unknown += 1 } else { ids.append(Int32(table.values[e])) }
        }
        return unknown
    }

    /// The `tokenizer.json` Hugging Face's `Tokenizer.save` writes for this vocabulary.
    static func huggingFaceJSON(_ words: [[UInt8]], lowercase: Bool) -> [UInt8] {
        var s = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": ["
        for (i, name) in SpecialToken.names.enumerated() {
            s += (i == 0 ? "\n" : ",\n")
            s += "    {\n      \"id\": \(i),\n      \"content\": \"\(name)\",\n      \"single_word\": false,\n"
            s += "      \"lstrip\": false,\n      \"rstrip\": false,\n      \"normalized\": false,\n      \"special\": true\n    }"
        }
        s += "\n  ],\n  \"normalizer\": " + (lowercase ? "{\n    \"type\": \"Lowercase\"\n  }" : "null") + ",\n  \"pre_tokenizer\": {\n    \"type\": \"Whitespace\"\n  },\n"
        s += "  \"post_processor\": {\n    \"type\": \"TemplateProcessing\",\n    \"single\": [\n"
        s += "      {\n        \"SpecialToken\": {\n          \"id\": \"[BOS]\",\n          \"type_id\": 0\n        }\n      },\n"
        s += "      {\n        \"Sequence\": {\n          \"id\": \"A\",\n          \"type_id\": 0\n        }\n      },\n"
        s += "      {\n        \"SpecialToken\": {\n          \"id\": \"[EOS]\",\n          \"type_id\": 0\n        }\n      }\n    ],\n"
        s += "    \"pair\": [\n"
        s += "      {\n        \"Sequence\": {\n          \"id\": \"A\",\n          \"type_id\": 0\n        }\n      },\n"
        s += "      {\n        \"Sequence\": {\n          \"id\": \"B\",\n          \"type_id\": 1\n        }\n      }\n    ],\n"
        s += "    \"special_tokens\": {\n"
        s += "      \"[BOS]\": {\n        \"id\": \"[BOS]\",\n        \"ids\": [\n          2\n        ],\n        \"tokens\": [\n          \"[BOS]\"\n        ]\n      },\n"
        s += "      \"[EOS]\": {\n        \"id\": \"[EOS]\",\n        \"ids\": [\n          3\n        ],\n        \"tokens\": [\n          \"[EOS]\"\n        ]\n      }\n"
        s += "    }\n  },\n  \"decoder\": null,\n  \"model\": {\n    \"type\": \"WordLevel\",\n    \"vocab\": {"
        var out = Array(s.utf8)
        for (id, w) in words.enumerated() {
            out += Array((id == 0 ? "\n      " : ",\n      ").utf8)
            JSONText.appendString(w, to: &out)
            out += Array(": \(id)".utf8)
        }
        out += Array("\n    },\n    \"unk_token\": \"[UNK]\"\n  }\n}".utf8)
        return out
    }
}

/// Word counts over pre-tokens, then the `WordLevelTrainer` rule: the special tokens,
/// then words by descending count, ties in ascending byte order, words below
/// `minFrequency` left out, `vocabSize` entries in all (specials included).
struct WordLevelTrainer {
    var counts = WordTable(capacity: 1 << 16)
    var vocabSize: Int
    var minFrequency: Int
    var lowercase: Bool

    init(vocabSize: Int = 2000, minFrequency: Int = 0, lowercase: Bool = false) {
        self.vocabSize = vocabSize
        self.minFrequency = minFrequency
        self.lowercase = lowercase
    }

    @inline(__always)
    mutating func count(_ p: UnsafePointer<UInt8>, _ n: Int) {
        if lowercase {
            LowercaseBytes.with(p, n) { q in PreTokenizer.forEach(q, n) { start, length in counts.add(q + start, length, 1) } }
        } else {
            PreTokenizer.forEach(p, n) { start, length in counts.add(p + start, length, 1) }
        }
    }

    mutating func count(_ text: String) {
        var t = text
        t.withUTF8 { b in if let p = b.baseAddress { count(p, b.count) } }
    }

    func train() -> WordLevelTokenizer {
        let c = counts
        let order = (0 ..< c.count).filter { c.values[$0] >= Int64(minFrequency) }.sorted { a, b in
            c.values[a] != c.values[b] ? c.values[a] > c.values[b] : c.less(a, b)
        }
        var words = SpecialToken.names.map { Array($0.utf8) }
        let specials = Set(words)
        for e in order {
            if words.count >= vocabSize { break }
            let w = Array(c.bytes(e))
            if specials.contains(w) { continue }
            words.append(w)
        }
        return WordLevelTokenizer(words: words, lowercase: lowercase)
    }
}

/// ASCII lower-casing into a scratch buffer (the normalizer of a lower-casing tokenizer).
enum LowercaseBytes {
    @inline(__always)
    static func with<R>(_ p: UnsafePointer<UInt8>, _ n: Int, _ body: (UnsafePointer<UInt8>) -> R) -> R {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(n, 1)) { buf in
            for i in 0 ..< n { let b = p[i]; buf[i] = b >= 0x41 && b <= 0x5A ? b | 0x20 : b }
            return body(UnsafePointer(buf.baseAddress!))
        }
    }
}

/// Byte-level JSON string writing (no Foundation round trip in the hot path).
enum JSONText {
    static let hex = Array("0123456789abcdef".utf8)

    /// Appends `bytes` as a quoted JSON string. Bytes must be valid UTF-8.
    static func appendString<C: Collection>(_ bytes: C, to out: inout [UInt8]) where C.Element == UInt8 {
        out.append(0x22)
        // Most fields need no escape: one bulk copy.
        if !bytes.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) {
            out.append(contentsOf: bytes)
            out.append(0x22)
            return
        }
        for b in bytes {
            switch b {
            case 0x22: out.append(0x5C); out.append(0x22)
            case 0x5C: out.append(0x5C); out.append(0x5C)
            case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
            case 0 ..< 0x20:
                out += Array("\\u00".utf8); out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)])
            default: out.append(b)
            }
        }
        out.append(0x22)
    }
}
