/// Types every stage shares.

/// The token ids of a set of documents, flat: document `i` is
/// `tokens[offsets[i] ..< offsets[i + 1]]`. Ids are the text's own, without
/// `[BOS]`/`[EOS]`: consumers add those (and cut to their max length).
public struct TokenizedCorpus: Sendable {
    public var tokens: [Int32]
    public var offsets: [Int]  // count + 1 entries, offsets[0] == 0
    public init(tokens: [Int32] = [], offsets: [Int] = [0]) {
        self.tokens = tokens
        self.offsets = offsets
    }
    public var count: Int { offsets.count - 1 }
    public func document(_ i: Int) -> ArraySlice<Int32> { tokens[offsets[i] ..< offsets[i + 1]] }
    public mutating func append<S: Sequence>(_ ids: S) where S.Element == Int32 {
        tokens.append(contentsOf: ids)
        offsets.append(tokens.count)
    }
}

/// One document's fields besides its text, aligned with the token shards.
public struct DocumentMetadata: Codable, Sendable, Equatable {
    public var title: String
    public var year: Int?          // nil when the "movie title - year" field has none
    public var genre: String
    public var expandedGenres: String
    public var rating: Float?      // nil when empty
    public var description: String // the cleaned text that was tokenized
    public var sourceFile: String
    public var sourceRow: Int      // 1-based data row in the source CSV (header excluded)
    public init(title: String, year: Int?, genre: String, expandedGenres: String, rating: Float?,
                description: String, sourceFile: String, sourceRow: Int) {
        self.title = title; self.year = year; self.genre = genre; self.expandedGenres = expandedGenres
        self.rating = rating; self.description = description; self.sourceFile = sourceFile; self.sourceRow = sourceRow
    }
}

/// The ids of the special tokens, fixed by the reference tokenizer.
public enum SpecialToken {
    public static let pad: Int32 = 0
    public static let unk: Int32 = 1
    public static let bos: Int32 = 2
    public static let eos: Int32 = 3
    public static let mask: Int32 = 4
    public static let names = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]"]
}

/// Genre lists: a document's genre is one name ("Sci-Fi") or, for a film ingest merged from
/// several genre files, several comma-separated ("Animation, Adventure"); expanded genres are
/// always a list.
public enum Genres {
    /// The names of a comma-separated list, trimmed, empty ones dropped.
    public static func names(_ list: String) -> [String] {
        list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// Whether `list` holds `genre` (case-insensitive).
    public static func holds(_ list: String, genre: String) -> Bool {
        names(list).contains { $0.caseInsensitiveCompare(genre) == .orderedSame }
    }

    /// A document's expanded genres (its genre when it has none), lower-cased, each once.
    public static func expanded(_ d: DocumentMetadata) -> [String] {
        var seen = Set<String>()
        return (names(d.expandedGenres).isEmpty ? names(d.genre) : names(d.expandedGenres)).map { $0.lowercased() }
            .filter { seen.insert($0).inserted }
    }

    /// Whether two lists share a genre.
    public static func overlap(_ a: String, _ b: String) -> Bool {
        a == b || names(a).contains { holds(b, genre: $0) }
    }
}
