import Foundation
import XCTest
import IdxBase
import IdxCorpus
import IdxLexical
import IdxStore
import IdxSearch
import IdxEval

/// The lexical half of the store: terms, BM25 across segments, corruption, hybrid search.
final class LexicalTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "idx-lexical-\(getpid())-\(UInt32.random(in: 0 ... .max))/index"
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: dir).deletingLastPathComponent().path)
    }

    static let texts = [
        "A robot falls in love with an alien princess.",
        "Two robots and their stories: a boss fight in space.",
        "The war ends; soldiers come home to their families.",
        "A detective hunts a vampire through the night.",
        "Soldiers of the war: letters from the front, 1944.",
        "An alien zeppelin drifts over a quiet town.",
    ]

    static func metadata(_ texts: [String], tag: String = "doc") -> [DocumentMetadata] {
        texts.enumerated().map { i, t in
            DocumentMetadata(title: "\(tag) \(i)", year: 2000 + i, genre: i % 2 == 0 ? "Sci-Fi" : "War", expandedGenres: "",
                             rating: nil, description: t, sourceFile: "t.csv", sourceRow: i + 1)
        }
    }

    func write(_ texts: [String], append: Bool = false, tag: String = "doc", seed: UInt64 = 1) throws -> VectorIndexWriter.Result {
        let d = 16
        let v = Synthetic.clustered(count: texts.count, dimension: d, clusters: 2, noise: 0.5, seed: seed)
        return try VectorIndexWriter.write(directory: dir, embeddings: v, dimension: d, metadata: Self.metadata(texts, tag: tag),
                                           provenance: Synthetic.provenance, append: append, standardize: false)
    }

    func testAnalyzerLowercasesFoldsPluralsAndDropsSingleCharacters() {
        XCTAssertEqual(LexicalAnalyzer.terms("The Robots' stories: a BOSS, 2 aliens! Bus"),
                       ["the", "robot", "story", "boss", "alien", "bus"])
        XCTAssertEqual(LexicalAnalyzer.terms("  ...  "), [])
        let film = DocumentMetadata(title: "Amélie", year: 2001, genre: "Comedy", expandedGenres: "", rating: nil,
                                    description: "A shy waitress helps others.", sourceFile: "t.csv", sourceRow: 1)
        XCTAssertEqual(LexicalAnalyzer.terms(LexicalAnalyzer.documentText(film)), ["amlie", "shy", "waitress", "help", "other"])
    }

    /// `idx search --json` and idx serve write hits field by field (HitJSON): the bytes must be
    /// CompactJSON's (Foundation's) for the hit's dictionary, whatever the fields hold.
    func testHitJSONWritesWhatCompactJSONWritesForTheHitsDictionary() throws {
        let metadata = [
            DocumentMetadata(title: "Am\u{e9}lie \"2\"", year: nil, genre: "Comedy, Romance", expandedGenres: "Comedy, Romance", rating: 7.25,
                             description: "A back\\slash, a tab\t, a bell \u{7}, a slash / and 日本.", sourceFile: "dir/t.csv", sourceRow: 3),
            DocumentMetadata(title: "", year: 1999, genre: "", expandedGenres: "", rating: nil, description: "x", sourceFile: "", sourceRow: 0),
            DocumentMetadata(title: "Plain", year: -5, genre: "War", expandedGenres: "Drama, War", rating: 0.1 + 0.2,
                             description: "line\nbreak\r\u{0}", sourceFile: "t.csv", sourceRow: 123_456_789),
        ]
        let v = Synthetic.clustered(count: metadata.count, dimension: 8, clusters: 1, noise: 0.5, seed: 3)
        _ = try VectorIndexWriter.write(directory: dir, embeddings: v, dimension: 8, metadata: metadata,
                                        provenance: Synthetic.provenance, append: false, standardize: false)
        let reader = try VectorIndexReader(directory: dir)
        for (i, score) in [Float(0.5), 0, -0.0, 1e-7, -3.25, 0.1].enumerated() {
            let hit = SearchHit(index: i % metadata.count, score: score, dense: score / 3, lexical: Float(i) / 7)
            for query in ["alien robot", "\"quoted\" \\ \u{1}"] {
                var written: [UInt8] = []
                try HitJSON(hit, reader: reader, rank: i + 1, query: query).writeJSON(into: &written)
                let expected = try CompactJSON.data(try Self.hitFields(hit, reader: reader, rank: i + 1, query: query))
                XCTAssertEqual(String(decoding: written, as: UTF8.self), String(decoding: expected, as: UTF8.self))
                XCTAssertEqual(try CompactJSON.data([HitJSON(hit, reader: reader, rank: i + 1, query: query)]), [UInt8(ascii: "[")] + expected + [UInt8(ascii: "]")])
            }
        }
    }

    /// A hit's fields as a dictionary (the reference HitJSON's bytes are checked against).
    static func hitFields(_ hit: SearchHit, reader: VectorIndexReader, rank: Int, query: String) throws -> [String: Any] {
        let m = try reader.documentMetadata(hit.index)
        return ["query": query, "rank": rank, "score": Double(hit.score), "title": m.title, "genre": m.genre,
                "expandedGenres": m.expandedGenres, "description": m.description, "id": try reader.documentId(hit.index),
                "source": "\(m.sourceFile):\(m.sourceRow)", "cosine": Double(hit.dense), "bm25": Double(hit.lexical),
                "year": m.year.map { $0 as Any } ?? NSNull(), "rating": m.rating.map { (Double($0) * 100).rounded() / 100 as Any } ?? NSNull()]
    }

    /// BM25 by its textbook formula, computed here from the texts alone.
    func referenceBM25(_ query: [String], _ texts: [String]) -> [Float] {
        let docs = texts.map(LexicalAnalyzer.terms)
        let n = Float(docs.count), avg = Float(docs.reduce(0) { $0 + $1.count }) / n
        var qtf: [String: Int] = [:]
        for t in query { qtf[t, default: 0] += 1 }
        return docs.map { doc in
            var s: Float = 0
            for (t, c) in qtf {
                let df = Float(docs.filter { $0.contains(t) }.count)
                guard df > 0 else { continue }
                let idf = log(1 + (n - df + 0.5) / (df + 0.5))
                let tf = Float(doc.filter { $0 == t }.count)
                s += (1 + log(Float(c))) * idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * Float(doc.count) / avg))
            }
            return s
        }
    }

    func testBM25MatchesTheFormulaAndIsTheSameOverAppendedSegments() throws {
        let query = LexicalAnalyzer.terms("alien robots at war, war, war")
        // what each document puts in the lexical half: its title ("doc <i>") and its description
        let expected = referenceBM25(query, Self.metadata(Self.texts).map(LexicalAnalyzer.documentText))
        XCTAssertGreaterThan(expected.max()!, 0)

        _ = try write(Self.texts)
        let whole = try XCTUnwrap(try VectorIndexReader(directory: dir).lexical)
        var one = [Float](repeating: 0, count: Self.texts.count)
        let q1 = try whole.query(terms: query)
        let best = one.withUnsafeMutableBufferPointer { whole.score(q1, into: $0.baseAddress!) }
        XCTAssertEqual(best, expected.max()!, accuracy: 1e-5)
        for i in 0 ..< expected.count { XCTAssertEqual(one[i], expected[i], accuracy: 1e-5, "document \(i)") }

        // The same documents as two segments (the second appended): statistics are global.
        try FileManager.default.removeItem(atPath: dir)
        _ = try write(Array(Self.texts[0 ..< 4]))
        _ = try write(Array(Self.texts[4...]), append: true, seed: 2)
        let reader = try VectorIndexReader(directory: dir)
        XCTAssertEqual(reader.manifest.segments.count, 2)
        let split = try XCTUnwrap(reader.lexical)
        var two = [Float](repeating: 0, count: Self.texts.count)
        let q2 = try split.query(terms: query)
        two.withUnsafeMutableBufferPointer { _ = split.score(q2, into: $0.baseAddress!) }
        for i in 0 ..< expected.count { XCTAssertEqual(two[i], expected[i], accuracy: 1e-5, "document \(i)") }

        // A term nobody uses is dropped from the query; an all-unknown query scores nothing.
        XCTAssertTrue(try split.query(terms: ["xylophone"]).isEmpty)
        XCTAssertEqual(try HybridScoring.normalizedBM25(split, terms: ["xylophone"]).max(), 0)
    }

    /// The second pass's BM25 query (RM3's shape): the query's weights divided by their sum, plus
    /// `weight` × the mean over the feedback documents of each term's idf · BM25 term weight
    /// divided by that document's total, its best `terms` terms only; then times each term's idf.
    /// Computed here from the texts.
    func testExpandedQueryAddsTheFeedbackDocumentsBestTerms() throws {
        _ = try write(Self.texts)
        let reader = try VectorIndexReader(directory: dir)
        let scorer = try XCTUnwrap(reader.lexical)
        let texts = Self.metadata(Self.texts).map(LexicalAnalyzer.documentText)
        let docs = texts.map(LexicalAnalyzer.terms)
        let n = Float(docs.count), avg = Float(docs.reduce(0) { $0 + $1.count }) / n
        func idf(_ t: String) -> Float {
            let df = Float(docs.filter { $0.contains(t) }.count)
            return log(1 + (n - df + 0.5) / (df + 0.5))
        }
        let feedback = [5, 1] // the zeppelin and the robots' boss fight
        var mean: [String: Float] = [:]
        for d in feedback {
            let doc = docs[d]
            var w: [String: Float] = [:]
            for t in Set(doc) {
                let tf = Float(doc.filter { $0 == t }.count)
                w[t] = idf(t) * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * Float(doc.count) / avg))
            }
            let total = w.values.reduce(0, +)
            for (t, x) in w { mean[t, default: 0] += x / total / 2 }
        }
        let query = try scorer.query(terms: LexicalAnalyzer.terms("zeppelin zeppelin"))
        let expanded = try scorer.expanded(query, documents: feedback.map { ($0, texts[$0]) }, weight: 0.5, terms: 100)
        var expected = mean.mapValues { 0.5 * $0 }
        expected["zeppelin", default: 0] += 1 // the query's one term, its weight divided by itself
        for t in expected.keys { expected[t]! *= idf(t) } // and then each term's idf once more
        XCTAssertEqual(Set(expanded.terms.map { String(decoding: $0, as: UTF8.self) }), Set(expected.keys))
        for (t, w) in zip(expanded.terms, expanded.weights) {
            XCTAssertEqual(w, expected[String(decoding: t, as: UTF8.self)]!, accuracy: 1e-5, String(decoding: t, as: UTF8.self))
        }
        XCTAssertEqual(expanded.terms.first.map { String(decoding: $0, as: UTF8.self) }, "zeppelin") // the query's terms first

        // Only the best `terms` are added, and the query's scores move: document 0 shares no word
        // with "zeppelin" but "alien" with its feedback document.
        let three = try scorer.expanded(query, documents: [(5, texts[5])], weight: 1, terms: 3)
        XCTAssertTrue((3 ... 4).contains(three.terms.count), "\(three.terms.count) terms")
        XCTAssertEqual(HybridScoring.normalizedBM25(scorer, query: query)[0], 0)
        XCTAssertGreaterThan(HybridScoring.normalizedBM25(scorer, query: try scorer.expanded(query, documents: [(5, texts[5])], weight: 1, terms: 100))[0], 0)
        // No documents or no weight: the query as it was.
        XCTAssertEqual(try scorer.expanded(query, documents: [], weight: 1, terms: 50).weights, query.weights)
        XCTAssertEqual(try scorer.expanded(query, documents: [(5, texts[5])], weight: 0, terms: 50).weights, query.weights)

        // idx search's second pass scores BM25 with the expanded query (its hits' `lexical`).
        let searcher = VectorSearcher(reader)
        let vector = reader.dequantizedVectors().prefix(reader.dimension).map { $0 }
        let fb = RelevanceFeedback(documents: 1, weight: 0, lexicalWeight: 1, lexicalTerms: 100)
        let lexical = try XCTUnwrap(HybridScoring.lexicalScores(scorer, terms: ["zeppelin"], weight: 0.9, feedback: fb) { texts[$0] })
        let hits = try searcher.search(vector, k: 6, lexical: lexical, feedback: fb)
        let second = HybridScoring.normalizedBM25(scorer, query: try scorer.expanded(try scorer.query(terms: ["zeppelin"]), documents: [(5, texts[5])],
                                                                                weight: 1, terms: 100))
        for h in hits { XCTAssertEqual(h.lexical, second[h.index], accuracy: 1e-6, "document \(h.index)") }
        XCTAssertGreaterThan(hits.first { $0.index == 0 }?.lexical ?? 0, 0)
        let onePass = try searcher.search(vector, k: 6, lexical: lexical)
        XCTAssertEqual(onePass.first { $0.index == 0 }?.lexical, 0)
    }

    func testCorruptedOrMissingLexicalSegmentIsNamed() throws {
        let result = try write(Self.texts)
        let entry = try XCTUnwrap(result.manifest.segments[0].lexical)
        let path = dir + "/" + entry.file
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        for position in [9, 60, original.count / 2, original.count - 12] {
            var bad = original
            bad[position] ^= 0x21
            try bad.write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try VectorIndexReader(directory: dir, verification: .onFirstRead), "byte \(position)") { error in
                let message = (error as? IdxError)?.message ?? ""
                XCTAssertTrue(message.contains(path), message)
            }
        }
        try original.prefix(original.count - 1).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try VectorIndexReader(directory: dir))
        try FileManager.default.removeItem(atPath: path)
        XCTAssertThrowsError(try VectorIndexReader(directory: dir)) { error in
            XCTAssertTrue(((error as? IdxError)?.message ?? "").contains("missing"))
        }
    }

    func testHybridSearchBlendsCosineAndBM25() throws {
        _ = try write(Self.texts)
        let reader = try VectorIndexReader(directory: dir)
        XCTAssertEqual(reader.manifest.lexicalWeight, HybridScoring.defaultLexicalWeight)
        let scorer = try XCTUnwrap(reader.lexical)
        let searcher = VectorSearcher(reader)

        // BM25 alone (a query no model word covers): the one document with the word comes first.
        let lexical = try HybridScoring.normalizedBM25(scorer, terms: LexicalAnalyzer.terms("zeppelins"))
        let zero = [Float](repeating: 0, count: reader.dimension)
        let alone = try searcher.search(zero, k: 3, lexical: LexicalScores(scores: lexical, weight: 1))
        XCTAssertEqual(alone.first?.index, 5)
        XCTAssertEqual(alone.first?.score ?? 0, 1, accuracy: 1e-6)

        // Blended: every hit's score is (1 - w) cosine + w BM25, and the ranking follows it.
        let query = reader.dequantizedVectors().prefix(reader.dimension).map { $0 }
        let war = try HybridScoring.normalizedBM25(scorer, terms: LexicalAnalyzer.terms("soldiers war"))
        let hits = try searcher.search(query, k: 6, lexical: LexicalScores(scores: war, weight: 0.5))
        XCTAssertEqual(hits.count, 6)
        for h in hits {
            XCTAssertEqual(h.score, 0.5 * h.dense + 0.5 * h.lexical, accuracy: 1e-6)
            XCTAssertEqual(h.lexical, war[h.index])
        }
        XCTAssertEqual(hits.map(\.score), hits.map(\.score).sorted(by: >))
        let cosineOnly = try searcher.search(query, k: 6)
        XCTAssertEqual(cosineOnly.first?.index, 0) // its own vector
        let warOnly = try searcher.search(query, k: 2, lexical: LexicalScores(scores: war, weight: 1))
        XCTAssertEqual(Set(warOnly.map(\.index)), [2, 4])
    }

    func testIndexFromRawVectorsHasNoLexicalHalf() throws {
        let d = 16
        let v = Synthetic.clustered(count: 10, dimension: d, clusters: 2, noise: 0.5)
        _ = try VectorIndexWriter.write(directory: dir, embeddings: v, dimension: d, metadata: Synthetic.metadata(count: 10),
                                        provenance: Synthetic.provenance, append: false, standardize: false, lexicalWeight: nil)
        let r = try VectorIndexReader(directory: dir)
        XCTAssertNil(r.lexical)
        XCTAssertNil(r.manifest.lexicalWeight)
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: dir + "/segments").contains { $0.hasSuffix(".idxlex") })
    }

    /// 16-dim unit vectors in the plane of the first two axes, at these angles (degrees).
    static func planar(_ degrees: [Double]) -> [Float] {
        degrees.flatMap { a -> [Float] in
            var v = [Float](repeating: 0, count: 16)
            v[0] = Float(cos(a * .pi / 180)); v[1] = Float(sin(a * .pi / 180))
            return v
        }
    }

    /// The genre vote: the best `documents` films share one vote each among their genres; each
    /// film scores 1 / (60 + rank) + weight · (mean vote of its genres) / 60.
    func testGenreVoteReRanksByAgreementWithTheBestHits() {
        let vote = RelevanceFeedback(documents: 3, weight: 0, genreWeight: 1)
        XCTAssertTrue(vote.isGenreVote)
        XCTAssertFalse(RelevanceFeedback(documents: 0, weight: 0, genreWeight: 1).isGenreVote)
        XCTAssertFalse(RelevanceFeedback(documents: 3, weight: 0).isGenreVote)
        // Votes: horror 1/3 + 1/6 + 1/3 = 5/6, comedy 1/6.
        let genres = [["horror"], ["horror", "comedy"], ["horror"], ["comedy"], ["drama"], ["horror"], []]
        let voted = vote.genreVoted(genres)
        let agreement: [Float] = [5.0 / 6, 0.5, 5.0 / 6, 1.0 / 6, 0, 5.0 / 6, 0]
        for v in voted {
            XCTAssertEqual(v.score, 1 / Float(61 + v.position) + agreement[v.position] / 60, accuracy: 1e-7)
        }
        XCTAssertEqual(voted.map(\.position), [0, 2, 5, 1, 3, 4, 6])
        XCTAssertEqual(voted.map(\.score), voted.map(\.score).sorted(by: >))
        // Without agreement anywhere (no genres), the order is the list's own.
        XCTAssertEqual(vote.genreVoted([[], [], []]).map(\.position), [0, 1, 2])
    }

    func testRelevanceFeedbackMovesTheQueryTowardItsBestHits() throws {
        // The mean of the rows, made unit, added with the weight, then the sum made unit.
        let f = RelevanceFeedback(documents: 2, weight: 1)
        let rows: [Float] = [0, 2, 0, 4]
        let moved = f.expanded([1, 0], rows: rows, count: 2, dim: 2)
        XCTAssertEqual(moved[0], Float(0.5).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(moved[1], Float(0.5).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(f.expanded([1, 0], rows: [1, 0, -1, 0], count: 2, dim: 2), [1, 0]) // no direction to move to
        XCTAssertFalse(RelevanceFeedback(documents: 0, weight: 2).isActive)

        // One document "x" at 40°, five "a" documents around 0°, the query at 25°: alone, x is
        // nearest; its best five (x and four a's) pull the query toward the a's.
        let base = Self.planar([40, 0, 2, -2, 4, -4])
        let query = Self.planar([25])
        _ = try VectorIndexWriter.write(directory: dir, embeddings: base, dimension: 16, metadata: Synthetic.metadata(count: 6),
                                        provenance: Synthetic.provenance, append: false, standardize: false, lexicalWeight: nil)
        let searcher = VectorSearcher(try VectorIndexReader(directory: dir))
        XCTAssertEqual(try searcher.search(query, k: 1).first?.index, 0)
        let hits = try searcher.search(query, k: 2, feedback: RelevanceFeedback(documents: 5, weight: 2))
        XCTAssertEqual(hits.first?.index, 4) // 4°, the a nearest the moved query
        XCTAssertEqual(hits.first?.dense ?? 0, hits.first?.score ?? 0)
        // BM25 alone has no dense side: feedback leaves it as it was.
        let lexical = LexicalScores(scores: [0, 0, 0, 0, 0, 1], weight: 1)
        XCTAssertEqual(try searcher.search(query, k: 1, lexical: lexical, feedback: .standard).first?.index, 5)
    }

    /// Blended, short typed queries lean on BM25 (a halves-trained model places two-word queries
    /// among the emptiest synopses); documents as queries keep the index's share; 0 stays cosine
    /// only; reciprocal-rank fusion always keeps the index's share.
    func testShortQueriesTakeALargerBM25ShareWhenBlended() {
        let w = HybridScoring.defaultLexicalWeight
        XCTAssertLessThan(w, HybridScoring.shortQueryLexicalWeight)
        XCTAssertEqual(HybridScoring.weight(w, queryTokens: 2, fusion: .blend), HybridScoring.shortQueryLexicalWeight)
        XCTAssertEqual(HybridScoring.weight(w, queryTokens: HybridScoring.shortQueryTokens, fusion: .blend), HybridScoring.shortQueryLexicalWeight)
        XCTAssertEqual(HybridScoring.weight(w, queryTokens: HybridScoring.shortQueryTokens + 1, fusion: .blend), w)
        XCTAssertEqual(HybridScoring.weight(0, queryTokens: 2, fusion: .blend), 0)
        XCTAssertEqual(HybridScoring.weight(0.9, queryTokens: 2, fusion: .blend), 0.9)
        XCTAssertEqual(HybridScoring.weight(w, queryTokens: 2, fusion: .reciprocalRank), w)
    }
}
