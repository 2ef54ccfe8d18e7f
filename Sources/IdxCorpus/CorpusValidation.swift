import Foundation
import IdxBase

/// Checks of a corpus manifest and its shards that hold whatever the checksums say: a
/// manifest rewritten by hand (or a shard re-checksummed after damage) must give an error
/// naming the file and field, never a crash or a read outside the corpus folder.
extension CorpusReader {
    /// Most documents and tokens a manifest may claim (far beyond any real corpus; a claim
    /// past them is a lie that would make the readers reserve terabytes).
    static let maxDocuments = 1 << 32
    static let maxTokens = 1 << 36

    public static func validate(_ m: CorpusManifest, path: String) throws {
        func bad(_ why: String) -> IdxError { IdxError("\(path): \(why); rebuild the corpus with `idx ingest`.") }
        guard (0 ... maxDocuments).contains(m.documents) else { throw bad("documents \(m.documents) is out of range") }
        guard (0 ... maxTokens).contains(m.tokens) else { throw bad("tokens \(m.tokens) is out of range") }
        guard m.vocabSize > SpecialToken.names.count, m.vocabSize <= Int(Int32.max) else {
            throw bad("vocab_size \(m.vocabSize) is out of range")
        }
        try checkFileName(m.tokenizerFile, field: "tokenizer_file", path: path)
        var names = Set<String>()
        for (i, s) in m.shards.enumerated() {
            guard s.index == i else { throw bad("shard \(i) has index \(s.index)") }
            guard (0 ... maxDocuments).contains(s.documents), (0 ... maxTokens).contains(s.tokens),
                  (0 ... maxDocuments).contains(s.firstDocument), s.tokensBytes >= 0, s.metadataBytes >= 0 else {
                throw bad("shard \(i) has a negative or impossible count")
            }
            for (name, field) in [(s.tokensFile, "tokens_file"), (s.metadataFile, "metadata_file")] {
                try checkFileName(name, field: "shard \(i) \(field)", path: path)
                guard names.insert(name).inserted else { throw bad("shard \(i) \(field) \(IdxError.printable(name)) is listed twice") }
            }
        }
    }

    /// A file a manifest lists must be a plain name inside the corpus folder.
    static func checkFileName(_ name: String, field: String, path: String) throws {
        guard !name.isEmpty, !name.contains("/"), name != ".", name != "..", !name.contains("\0") else {
            throw IdxError("\(path): \(field) \"\(IdxError.printable(name))\" is not a file name inside the corpus folder; rebuild the corpus with `idx ingest`.")
        }
    }

    /// Every id must be a row of the vocabulary: the model's embedding table has no others.
    public static func checkIds(_ ids: ArraySlice<Int32>, vocabSize: Int, name: String) throws {
        var bad: Int32?
        for id in ids where id < 0 || Int(id) >= vocabSize { bad = id; break }
        if let bad {
            throw IdxError("\(name): token id \(bad) is outside the vocabulary (0..<\(vocabSize)); the corpus is damaged, run `idx ingest` again.")
        }
    }
}

extension TokenShard {
    /// The largest decompressed shard of these counts (ids of 4 bytes), or 0 when they are impossible.
    static func maxBytes(documents: Int, tokens: Int) -> Int {
        guard documents >= 0, tokens >= 0, documents < Int.max / 16, tokens < Int.max / 8 else { return 0 }
        return headerBytes + 8 * (documents + 1) + 4 * tokens
    }
}
