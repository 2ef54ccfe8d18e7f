import Foundation
import IdxBase
import IdxCorpus
import IdxSearch

/// Typed-query precision@k (the protocol of the shared query sets): each query is searched
/// through `SearchEngine` exactly as `idx search` answers it; a hit counts when its
/// expanded genres hold the query's genre; the score is the mean over queries of
/// (hits that count) / k. A film shown twice counts twice, so duplicates cost precision.
public enum TypedQueries {
    public struct Query: Equatable, Sendable {
        public var text: String
        public var genre: String
        public init(text: String, genre: String) { self.text = text; self.genre = genre }
    }

    public struct Result: Codable, Equatable, Sendable {
        public var file: String
        public var k: Int
        public var queries: Int
        /// Mean over queries of (hits whose expanded genres hold the query's genre) / k.
        public var precision: Double
        /// Result lists that showed one film (title, year and description) more than once.
        public var listsWithDuplicates: Int
        /// Per query: its text, genre and the hits that counted.
        public var perQuery: [PerQuery]
    }

    public struct PerQuery: Codable, Equatable, Sendable {
        public var query: String
        public var genre: String
        public var relevant: Int
        public var hits: [Int]
    }

    /// `query<TAB>genre` lines; a first line `query<TAB>genre` is the header; blank lines and
    /// `#` comments are skipped.
    public static func read(_ path: String) throws -> [Query] {
        let rows = try EvalRun.readSeedTest(path, what: "typed queries (query<TAB>genre lines)", option: "--queries")
        let body = rows.first.map { $0.text.lowercased() == "query" && $0.label.lowercased() == "genre" } == true ? Array(rows.dropFirst()) : rows
        guard !body.isEmpty else { throw IdxError("\(path): no queries (query<TAB>genre lines).") }
        return body.map { Query(text: $0.text, genre: $0.label) }
    }

    public static func evaluate(_ engine: SearchEngine, queries: [Query], file: String, settings: SearchSettings) throws -> Result {
        var total = 0.0, duplicates = 0
        var per: [PerQuery] = []
        for q in queries {
            let hits = try engine.search(q.text, settings)
            var relevant = 0
            var seen = Set<String>()
            var duplicated = false
            for h in hits {
                let m = try engine.reader.documentMetadata(h.index)
                if Genres.holds(m.expandedGenres, genre: q.genre) { relevant += 1 }
                if !seen.insert(SearchEngine.filmKey(m)).inserted { duplicated = true }
            }
            if duplicated { duplicates += 1 }
            total += Double(relevant) / Double(settings.k)
            per.append(PerQuery(query: q.text, genre: q.genre, relevant: relevant, hits: hits.map(\.index)))
        }
        return Result(file: file, k: settings.k, queries: queries.count, precision: total / Double(queries.count),
                      listsWithDuplicates: duplicates, perQuery: per)
    }
}
