import Foundation
import IdxBase
import IdxCorpus
import IdxLexical
import IdxModel
import IdxStore

/// One query: a text as typed, or an indexed document searched for its neighbours.
public struct SearchQuery: Sendable {
    /// What BM25 and (without `vector`) the model read, cleaned and tokenized as the corpus was.
    public var text: String
    /// The query's vector in the index's space when it is already there (an indexed document's
    /// own); nil: the model embeds `text`.
    public var vector: [Float]?
    /// A document the answer never holds (leave-one-out: the query's own).
    public var excluding: Int?
    public init(_ text: String, vector: [Float]? = nil, excluding: Int? = nil) {
        self.text = text; self.vector = vector; self.excluding = excluding
    }
}

/// What a search is asked for, beside its text: shared by idx search, idx eval, the nightly
/// gate and idx serve, so that each of them answers (and measures) the same thing.
public struct SearchSettings: Equatable, Sendable {
    /// Number of results.
    public var k = 10
    /// Only documents of this genre (case-insensitive); nil: all.
    public var genre: String?
    /// The BM25 share w of the hybrid score; nil: the index's, adapted to short queries
    /// (HybridScoring.weight). An explicit share is used as given.
    public var lexicalWeight: Float?
    /// The second pass (RelevanceFeedback); `documents` 0 turns it off.
    public var feedback = RelevanceFeedback.standard
    /// How the dense and BM25 sides combine.
    public var fusion = VectorSearcher.Fusion.standard
    /// Scan threads (0: all cores).
    public var threads = 0
    /// Candidates re-ranked exactly (nil: max(8k, 100)).
    public var rerank: Int?
    public init(k: Int = 10) { self.k = k }

    /// Refuses settings no index can answer, before any work is done.
    public func validate() throws {
        guard k >= 1 else { throw IdxError("-k \(k): the number of results must be at least 1.") }
        guard k <= SearchEngine.maxResults else {
            throw IdxError("-k \(k): at most \(SearchEngine.maxResults) results are returned; ask for fewer.")
        }
        if let w = lexicalWeight, !(0 ... 1).contains(w) {
            throw IdxError("--lexical-weight \(w): give a share from 0 (cosine only) to 1 (BM25 only).")
        }
        guard feedback.documents <= SearchEngine.maxResults else {
            throw IdxError("--feedback-docs \(feedback.documents): at most \(SearchEngine.maxResults) documents can feed back; give fewer.")
        }
    }
}

/// The one search path of idx: a query's text is cleaned and tokenized as the corpus was,
/// embedded with the index's model, scored against every vector (VectorSearcher's int8 scan
/// and exact re-rank) blended with BM25 over the full vocabulary (HybridScoring), then scored
/// again after relevance feedback. `idx search`, `idx eval --queries`, the nightly gate and
/// `idx serve` all call `search`, so what eval measures is what search answers.
///
/// Thread-safe: each concurrent query embeds with an encoder of its own (`idleEncoders`), and
/// the index is read-only.
public final class SearchEngine: @unchecked Sendable {
    /// The largest k and feedback-document count accepted (a result list longer than this is
    /// no search; it also bounds the memory a request can ask for).
    public static let maxResults = 10_000

    public let reader: VectorIndexReader
    public let searcher: VectorSearcher
    /// The index's model; nil for an index built from raw vectors.
    public let model: EncoderModel?
    let tokenizer: WordLevelTokenizer?
    /// Encoders over the model's weights not in use: a query takes one (or makes one) and gives
    /// it back, so concurrent queries (idx serve) never wait for each other's forward.
    private var idleEncoders: [EncoderModel] = []
    private let encoderLock = NSLock()
    /// Genre lists parsed once by their text (`expandedGenres`): the genre vote reads 100 a query,
    /// and a corpus holds a few hundred distinct ones. Bounded, in case one holds many more.
    private var genreLists: [String: [String]] = [:]
    private let genreListLock = NSLock()

    /// Opens the published generation of `index` and the model it records, or the copy of it
    /// in `model` (checked by hash either way).
    public init(index: String, model modelDirectory: String? = nil, verification: Verification = .onFirstRead) throws {
        reader = try VectorIndexReader(directory: index, verification: verification)
        searcher = VectorSearcher(reader)
        let dir = modelDirectory ?? reader.modelDirectory
        if dir.isEmpty {
            model = nil
            tokenizer = nil
        } else {
            let model = try EncoderModel.load(directory: dir)
            try reader.checkModel(modelHash: model.modelHash, tokenizerHash: model.tokenizerHash, modelDirectory: dir)
            self.model = model
            tokenizer = try model.tokenizer()
        }
    }

    /// The index's own BM25 share (0: cosine only, or no lexical half).
    public var indexLexicalWeight: Float { reader.lexical == nil ? 0 : (reader.manifest.lexicalWeight ?? 0) }

    /// The best `settings.k` documents for `text`, best first.
    public func search(_ text: String, _ settings: SearchSettings) throws -> [SearchHit] {
        try search(SearchQuery(text), settings)
    }

    /// The best `settings.k` documents for `query`, best first.
    public func search(_ query: SearchQuery, _ settings: SearchSettings) throws -> [SearchHit] {
        try search(together: [query], settings)[0].get()
    }

    /// A query read and scored, ready for the scan: its vector (nil: to embed `ids`) and BM25 side.
    private struct PreparedQuery {
        var vector: [Float]?
        var ids: [Int32]
        var lexical: LexicalScores?
    }

    /// Cleans and tokenizes a query and scores its BM25 side; refuses one with nothing to search.
    private func prepare(_ query: SearchQuery, _ settings: SearchSettings, model: EncoderModel, tokenizer: WordLevelTokenizer) throws -> PreparedQuery {
        let text = query.text
        let cleaned = Cleaning.cleanKeepingShort(text)
        let ids = tokenizer.encode(cleaned)
        if ids.isEmpty {
            throw IdxError("query \"\(Self.quoted(text))\": nothing left after cleaning; type some words.")
        }
        let weight = settings.lexicalWeight ?? indexLexicalWeight
        var lexical: LexicalScores?
        if weight > 0, let scorer = reader.lexical {
            let share = settings.lexicalWeight ?? HybridScoring.weight(weight, queryTokens: ids.count, fusion: settings.fusion)
            lexical = try HybridScoring.lexicalScores(scorer, terms: LexicalAnalyzer.terms(cleaned), weight: share,
                                                  feedback: settings.feedback) {
                LexicalAnalyzer.documentText(self.reader.metadata($0))
            }
        }
        let known = query.vector != nil || !ids.allSatisfy { $0 == SpecialToken.unk }
        if !known && lexical == nil {
            throw IdxError("query \"\(Self.quoted(text))\": none of its words is in the vocabulary of \(model.directory)"
                           + (reader.lexical == nil ? "" : " or in any indexed document") + "; try other words.")
        }
        if let given = query.vector {
            precondition(given.count == reader.dimension, "query vector has \(given.count) dimensions, the index \(reader.dimension)")
        } else if !known {
            lexical!.weight = 1 // no word the model knows: its embedding would say nothing
        }
        return PreparedQuery(vector: query.vector ?? (known ? nil : [Float](repeating: 0, count: reader.dimension)), ids: ids, lexical: lexical)
    }

    /// Queries searched together, on this thread (with `settings.threads` scan threads): one
    /// forward embeds them all, and each pass of the scan reads the index once for all of them.
    /// Each query's answer is the one it gets alone (the embedding is row-wise, the scan's
    /// arithmetic per query). One result, or the error that query met, per query, in order.
    public func search(together queries: [SearchQuery], _ settings: SearchSettings) -> [Result<[SearchHit], IdxError>] {
        guard let model, let tokenizer else {
            let e = IdxError("\(reader.directory): built from raw vectors, with no model to embed text; search it with --query-vectors.")
            return queries.map { _ in .failure(e) }
        }
        var results = [Result<[SearchHit], IdxError>?](repeating: nil, count: queries.count)
        var prepared: [(position: Int, query: PreparedQuery)] = []
        for (i, q) in queries.enumerated() {
            do { prepared.append((i, try prepare(q, settings, model: model, tokenizer: tokenizer))) } catch {
                results[i] = .failure(Self.asIdxError(error, query: q))
            }
        }
        if !prepared.isEmpty {
            // The queries the model reads, embedded in one forward.
            var toEmbed = TokenizedCorpus()
            for p in prepared where p.query.vector == nil { toEmbed.append(p.query.ids) }
            var embedded: [Float] = []
            if toEmbed.count > 0 {
                let encoder = encoderLock.withLock { idleEncoders.popLast() } ?? model.worker()
                embedded = encoder.embedQueries(toEmbed, maxTokens: reader.manifest.maxTokens)
                encoderLock.withLock { idleEncoders.append(encoder) }
            }
            let d = reader.dimension
            var next = 0
            let vectors = prepared.map { p -> [Float] in
                if let v = p.query.vector { return v }
                defer { next += 1 }
                return reader.prepareQuery(Array(embedded[next * d ..< (next + 1) * d]))
            }
            // One film, one hit: ingest merges a film's rows, but two corpora appended to one index
            // (nightly batches) can still hold it twice. Ask for a few more and keep each film's best;
            // a query that still has too few asks again, alone, for twice as many.
            let depth = min(reader.count, Self.films(settings) + 10)
            do {
                let hits = try searcher.search(vectors, k: depth, genre: settings.genre,
                                               excluding: prepared.map { queries[$0.position].excluding }, threads: settings.threads,
                                               rerank: settings.rerank, lexical: prepared.map(\.query.lexical),
                                               feedback: settings.feedback, fusion: settings.fusion)
                for (b, p) in prepared.enumerated() {
                    do {
                        results[p.position] = .success(try bestFilms(hits[b], depth: depth, vector: vectors[b], query: queries[p.position],
                                                                     lexical: p.query.lexical, settings))
                    } catch { results[p.position] = .failure(Self.asIdxError(error, query: queries[p.position])) }
                }
            } catch {
                for p in prepared { results[p.position] = .failure(Self.asIdxError(error, query: queries[p.position])) }
            }
        }
        return results.map { $0! }
    }

    /// The best films of `hits` (a pass at `depth`): each film's best hit, at most `settings.k`
    /// (then the genre vote, when asked for); searches again, deeper, while too few remain.
    private func bestFilms(_ hits: [SearchHit], depth: Int, vector: [Float], query: SearchQuery, lexical: LexicalScores?,
                       _ settings: SearchSettings) throws -> [SearchHit] {
        let vote = settings.feedback.isGenreVote, films = Self.films(settings)
        var hits = hits, depth = depth
        while true {
            var seen = Set<String>(), kept: [SearchHit] = [], genres: [[String]] = []
            for h in hits where kept.count < films {
                let m = try reader.documentMetadata(h.index)
                if seen.insert(Self.filmKey(m)).inserted {
                    kept.append(h)
                    if vote { genres.append(expandedGenres(m)) }
                }
            }
            if kept.count == films || hits.count < depth || depth == reader.count {
                guard vote else { return kept }
                return settings.feedback.genreVoted(genres).prefix(settings.k).map { v in
                    var h = kept[v.position]
                    h.score = v.score
                    return h
                }
            }
            depth = min(reader.count, depth * 2)
            hits = try searcher.search(vector, k: depth, genre: settings.genre, excluding: query.excluding, threads: settings.threads,
                                       rerank: settings.rerank, lexical: lexical, feedback: settings.feedback, fusion: settings.fusion)
        }
    }

    /// The films a search keeps before it cuts to k: the genre vote's depth when it votes.
    private static func films(_ settings: SearchSettings) -> Int {
        settings.feedback.isGenreVote ? max(settings.k, RelevanceFeedback.genreVoteDepth) : settings.k
    }

    static func asIdxError(_ error: Error, query: SearchQuery) -> IdxError {
        (error as? IdxError) ?? IdxError("query \"\(Self.quoted(query.text))\": \(error)")
    }

    /// `Genres.expanded(m)`, through `genreLists`.
    func expandedGenres(_ m: DocumentMetadata) -> [String] {
        let key = m.expandedGenres + "\u{1}" + m.genre
        if let known = genreListLock.withLock({ genreLists[key] }) { return known }
        let list = Genres.expanded(m)
        genreListLock.withLock { if genreLists.count < 4096 { genreLists[key] = list } }
        return list
    }

    /// What makes two documents one film: title, year and description.
    public static func filmKey(_ m: DocumentMetadata) -> String { "\(m.title)\u{1}\(m.year ?? -1)\u{1}\(m.description)" }

    /// A batch of queries (FAISS's shape): one result, or the error that query met, per text.
    public func search(_ texts: [String], _ settings: SearchSettings) -> [Result<[SearchHit], IdxError>] {
        search(texts.map { SearchQuery($0) }, settings)
    }

    /// A batch of queries: one result, or the error that query met, per query, in order. The
    /// batch is cut into parts (VectorSearcher.batchParts: one a core at least, each a batch of
    /// its own, its scan on one thread); the answers do not depend on how it is cut.
    public func search(_ queries: [SearchQuery], _ settings: SearchSettings) -> [Result<[SearchHit], IdxError>] {
        guard queries.count > 1 else { return search(together: queries, settings) }
        var one = settings
        one.threads = 1
        let parts = VectorSearcher.batchParts(queries.count)
        // Errors are results here, so the map itself never throws.
        return ((try? ParallelMap.map(parts.count) { search(together: Array(queries[parts[$0]]), one) }) ?? []).flatMap { $0 }
    }

    /// One hit as `idx search --json` prints it: the JSON object on one line.
    public static func jsonLine(_ hit: SearchHit, reader: VectorIndexReader, rank: Int, query: String) throws -> String {
        var out: [UInt8] = []
        try HitJSON(hit, reader: reader, rank: rank, query: query).writeJSON(into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// One hit as `idx search` prints it for a reader: rank, score, title (year), [genre], the
    /// description cut to 90 characters.
    public static func textLine(_ hit: SearchHit, reader: VectorIndexReader, rank: Int) throws -> String {
        let m = try reader.documentMetadata(hit.index)
        let year = m.year.map { " (\($0))" } ?? ""
        let desc = m.description.count > 90 ? String(m.description.prefix(87)) + "..." : m.description
        return String(format: "%2d  %.4f  ", rank, hit.score) + "\(m.title)\(year)  [\(m.genre)]  \(desc)"
    }

    /// `text` for a message: control bytes escaped, at most 80 characters.
    public static func quoted(_ text: String) -> String {
        IdxError.printable(text, limit: 80)
    }
}

/// A hit as `idx search --json` prints it and idx serve answers it: the bytes CompactJSON (that
/// is, Foundation's JSONSerialization with sorted keys) writes for the hit's fields as a
/// dictionary, written field by field (no dictionary of Any per hit, with its casts and its key
/// sort, on the path every answer takes; a test compares the bytes).
public struct HitJSON: CompactJSON.Writable {
    let hit: SearchHit, metadata: DocumentMetadata, id: Int64, rank: Int, query: String

    public init(_ hit: SearchHit, reader: VectorIndexReader, rank: Int, query: String) throws {
        self.hit = hit; (id, metadata) = try reader.document(hit.index)
        self.rank = rank; self.query = query
    }

    /// The keys in CompactJSON's (Foundation's `.sortedKeys`) order.
    public func writeJSON(into out: inout [UInt8]) throws {
        let m = metadata
        func key(_ name: String, first: Bool = false) {
            out.append(contentsOf: (first ? "{\"" : ",\"").utf8); out.append(contentsOf: name.utf8); out.append(contentsOf: "\":".utf8)
        }
        key("bm25", first: true); try CompactJSON.float(Double(hit.lexical), into: &out)
        key("cosine"); try CompactJSON.float(Double(hit.dense), into: &out)
        key("description"); CompactJSON.string(m.description, into: &out)
        key("expandedGenres"); CompactJSON.string(m.expandedGenres, into: &out)
        key("genre"); CompactJSON.string(m.genre, into: &out)
        key("id"); out.append(contentsOf: id.description.utf8)
        key("query"); CompactJSON.string(query, into: &out)
        key("rank"); out.append(contentsOf: rank.description.utf8)
        key("rating")
        if let r = m.rating { try CompactJSON.float((Double(r) * 100).rounded() / 100, into: &out) } else { out.append(contentsOf: "null".utf8) }
        key("score"); try CompactJSON.float(Double(hit.score), into: &out)
        key("source"); CompactJSON.string("\(m.sourceFile):\(m.sourceRow)", into: &out)
        key("title"); CompactJSON.string(m.title, into: &out)
        key("year"); out.append(contentsOf: (m.year.map { $0.description } ?? "null").utf8)
        out.append(UInt8(ascii: "}"))
    }
}
