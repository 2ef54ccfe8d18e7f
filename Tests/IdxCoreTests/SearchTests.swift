import Foundation
import XCTest
@testable import IdxCore

final class SearchTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "idx-search-\(getpid())-\(UInt32.random(in: 0 ... .max))/index"
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: dir).deletingLastPathComponent().path)
    }

    func build(_ v: [Float], dimension d: Int, segments: Int = 1) throws -> VectorIndexReader {
        let n = v.count / d
        let meta = Synthetic.metadata(count: n)
        let per = (n + segments - 1) / segments
        for s in 0 ..< segments {
            let rows = s * per ..< min(n, (s + 1) * per)
            _ = try VectorIndexWriter.write(directory: dir, embeddings: Array(v[rows.lowerBound * d ..< rows.upperBound * d]),
                                            dimension: d, metadata: Array(meta[rows]), provenance: Synthetic.provenance,
                                            append: s > 0, standardize: false)
        }
        return try VectorIndexReader(directory: dir, verifyMetadata: false)
    }

    func testDotKernelsMatchPlainArithmetic() {
        var g = Synthetic.Generator(state: 9)
        for d in [1, 15, 16, 17, 31, 32, 33, 64, 100, 128] {
            let a = (0 ..< d).map { _ in Int8(Int(g.next() % 255) - 127) }
            let b = (0 ..< d).map { _ in Int8(Int(g.next() % 255) - 127) }
            let expected = zip(a, b).reduce(Int32(0)) { $0 + Int32($1.0) * Int32($1.1) }
            let wide = VectorSearcher.splitQuery(a)
            let blocks = d / 16
            let got = wide.withUnsafeBytes { q16 in b.withUnsafeBytes { v in a.withUnsafeBufferPointer { q8 in
                b.withUnsafeBufferPointer { v8 in
                    VectorSearcher.dot16(q16.baseAddress!, v.baseAddress!, blocks: blocks)
                        + VectorSearcher.dot(q8.baseAddress! + blocks * 16, v8.baseAddress! + blocks * 16, d - blocks * 16)
                } } } }
            XCTAssertEqual(got, expected, "d = \(d)")
        }
        // Extremes: every lane at ±127 (the largest pair sum the Int16 stage sees).
        let hi = [Int8](repeating: 127, count: 64), lo = [Int8](repeating: -127, count: 64)
        let hi16 = VectorSearcher.splitQuery(hi)
        let extreme = hi16.withUnsafeBytes { q in lo.withUnsafeBytes { v in VectorSearcher.dot16(q.baseAddress!, v.baseAddress!, blocks: 4) } }
        XCTAssertEqual(extreme, -127 * 127 * 64)
    }

    func testTopKEqualsBruteForceUpToQuantization() throws {
        let d = 64, n = 5000
        let v = Synthetic.clustered(count: n, dimension: d, clusters: 40, noise: 0.8, seed: 5)
        let r = try build(v, dimension: d, segments: 2)
        let searcher = VectorSearcher(r)
        let u = Synthetic.unit(v, dimension: d)
        let queries = Synthetic.clustered(count: 20, dimension: d, clusters: 40, noise: 0.8, seed: 6)
        try u.withUnsafeBufferPointer { base in
            for qi in 0 ..< 20 {
                let q = r.prepareQuery(Array(queries[qi * d ..< (qi + 1) * d]))
                let hits = try searcher.search(q, k: 10, threads: 1)
                let exact = ExactSearch.scores(base, dimension: d, query: q)
                let kth = ExactSearch.kthScore(exact, k: 10)
                XCTAssertEqual(hits.count, 10)
                for h in hits {
                    // Reported scores are cosines of the stored vectors: within quantization error of the exact ones.
                    XCTAssertEqual(h.score, exact[h.index], accuracy: 2e-3)
                    // Anything returned is (up to quantization) at least as good as the exact 10th best.
                    XCTAssertGreaterThanOrEqual(exact[h.index], kth - 2e-3)
                }
                XCTAssertEqual(hits.map(\.score), hits.map(\.score).sorted(by: >))
                // The parallel scan returns the same answer.
                XCTAssertEqual(try searcher.search(q, k: 10, threads: 2), hits)
            }
        }
    }

    func testRecallOnClusteredData() throws {
        let d = 128, n = 20000
        let v = Synthetic.clustered(count: n, dimension: d, clusters: 200, noise: 0.4, common: 2, seed: 7)
        let r = try build(v, dimension: d)
        let searcher = VectorSearcher(r)
        let u = Synthetic.unit(v, dimension: d)
        let queries = Synthetic.clustered(count: 50, dimension: d, clusters: 200, noise: 0.4, common: 2, seed: 7 + 1)
        var total = 0.0
        try u.withUnsafeBufferPointer { base in
            for qi in 0 ..< 50 {
                let q = r.prepareQuery(Array(queries[qi * d ..< (qi + 1) * d]))
                let hits = try searcher.search(q, k: 10)
                total += ExactSearch.recall(returned: hits.map(\.index), exactScores: ExactSearch.scores(base, dimension: d, query: q), k: 10)
            }
        }
        XCTAssertGreaterThanOrEqual(total / 50, 0.99)
    }

    func testGenreFilterAndDuplicates() throws {
        let d = 32
        // Three identical copies: tie-aware recall treats the copies as interchangeable.
        let one = Synthetic.clustered(count: 300, dimension: d, clusters: 10, noise: 0.4, seed: 11)
        let v = one + one + one
        let r = try build(v, dimension: d)
        let searcher = VectorSearcher(r)
        let q = r.prepareQuery(Array(one[0 ..< d]))
        let hits = try searcher.search(q, k: 9, genre: "sci-fi")
        XCTAssertEqual(hits.count, 9)
        for h in hits { XCTAssertEqual(r.metadata(h.index).genre, "Sci-Fi") }
        let all = try searcher.search(q, k: 3)
        XCTAssertEqual(Set(all.map { $0.index % 300 }), [0]) // document 0 and its two copies
        XCTAssertThrowsError(try searcher.search(q, k: 3, genre: "Western")) { error in
            XCTAssertTrue(((error as? IdxError)?.message ?? "").contains("Sci-Fi"))
        }
        u(v, d) { base in
            let exact = ExactSearch.scores(base, dimension: d, query: q)
            XCTAssertEqual(ExactSearch.recall(returned: all.map(\.index), exactScores: exact, k: 3), 1)
            XCTAssertEqual(ExactSearch.recall(returned: [1, 2, 3], exactScores: exact, k: 3), 0)
        }
    }

    private func u(_ v: [Float], _ d: Int, _ body: (UnsafeBufferPointer<Float>) -> Void) {
        Synthetic.unit(v, dimension: d).withUnsafeBufferPointer(body)
    }
}
