import Foundation
import CSupport
import XCTest
import IdxBase
import IdxSearch
@testable import IdxStore

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
        return try VectorIndexReader(directory: dir, verification: .onFirstRead)
    }

    func testDotKernelsMatchPlainArithmetic() throws {
        // This process takes the CPU's best path; the other paths run in child processes
        // (the choice is made once per process) through `idx search --bench`, below.
        var g = Synthetic.Generator(state: 9)
        for d in [1, 15, 16, 17, 31, 32, 33, 64, 100, 128, 192, 256, 320, 2100] {
            let n = 37
            let q = (0 ..< d).map { _ in Int8(Int(g.next() % 255) - 127) }
            let rows = (0 ..< n * d).map { _ in Int8(Int(g.next() % 255) - 127) }
            var got = [Int32](repeating: 0, count: n)
            idx_int8_dots(rows, n, d, q, &got)
            for i in 0 ..< n {
                let expected = (0 ..< d).reduce(Int32(0)) { $0 + Int32(q[$1]) * Int32(rows[i * d + $1]) }
                XCTAssertEqual(got[i], expected, "d = \(d), row \(i), path \(String(cString: idx_int8_dots_path()))")
            }
        }
        // Extremes: every lane at ±127.
        let hi = [Int8](repeating: 127, count: 64), lo = [Int8](repeating: -127, count: 64)
        var extreme: Int32 = 0
        idx_int8_dots(lo, 1, 64, hi, &extreme)
        XCTAssertEqual(extreme, -127 * 127 * 64)
        // The same in whole blocks of rows (the VNNI path reduces 16 rows at a time), and at -128.
        for (code, d) in [(Int8(-127), 64), (Int8(-128), 64), (Int8(127), 200)] {
            var sums = [Int32](repeating: 0, count: 35)
            idx_int8_dots([Int8](repeating: code, count: 35 * d), 35, d, [Int8](repeating: 127, count: d), &sums)
            XCTAssertEqual(sums, [Int32](repeating: Int32(code) * 127 * Int32(d), count: 35), "code \(code), d = \(d)")
        }
    }

    /// The scan's scores, on every path the CPU has, are the bits Swift's own expression gives
    /// (no fused multiply-add anywhere), with and without BM25 scores, at and around 16 rows,
    /// and the rows listed above a threshold are exactly those.
    func testScanScoresAreTheSwiftExpressionsBits() {
        var g = Synthetic.Generator(state: 13)
        func unit() -> Float { Float(g.next() % 2_000_001) / 1_000_000 - 1 }
        for n in [1, 15, 16, 17, 100] {
            let dots = (0 ..< n).map { _ in Int32(Int(g.next() % 40_001) - 20_000) }
            let norms = (0 ..< n).map { _ in 0.5 + abs(unit()) }, scales = (0 ..< n).map { _ in abs(unit()) / 100 }
            let qc = (0 ..< 200).map { _ in unit() }, cids = (0 ..< n).map { _ in UInt8(g.next() % 200) }
            let lexical = (0 ..< n).map { _ in abs(unit()) }
            let qScale = abs(unit()) / 127, w: Float = 0.37
            for withLexical in [false, true] {
                let expected = (0 ..< n).map { i -> Float in
                    let s = norms[i] * (qc[Int(cids[i])] + scales[i] * qScale * Float(dots[i]))
                    return withLexical ? (1 - w) * s + w * lexical[i] : s
                }
                // A threshold some rows pass (the median), none, and all.
                for threshold in [expected.sorted()[n / 2], .infinity, -.infinity] {
                    for path: Int32 in [0, 1, 2] {
                        var out = [Float](repeating: .nan, count: n), above = [UInt32](repeating: 0, count: n), taken: Int32 = -1
                        let count = lexical.withUnsafeBufferPointer { lx in
                            idx_scan_scores_with(path, n, dots, qScale, norms, scales, cids, qc, withLexical ? lx.baseAddress : nil, w,
                                                 threshold, &out, &above, &taken)
                        }
                        let label = "n \(n), path \(taken), lexical \(withLexical), threshold \(threshold)"
                        XCTAssertEqual(out.map(\.bitPattern), expected.map(\.bitPattern), label)
                        XCTAssertEqual(Array(above.prefix(count)), expected.indices.filter { expected[$0] > threshold }.map { UInt32($0) }, label)
                    }
                }
            }
        }
    }

    /// The re-rank's decoded vectors, on every path the CPU has, are the bits Swift's own
    /// expression gives, for widths with and without a partial block of 16, rows in any order.
    func testDecodedRowsAreTheSwiftExpressionsBits() {
        var g = Synthetic.Generator(state: 17)
        func unit() -> Float { Float(g.next() % 2_000_001) / 1_000_000 - 1 }
        for d in [1, 16, 20, 128] {
            let n = 50, centroidCount = 7
            let codes = (0 ..< n * d).map { _ in Int8(Int(g.next() % 255) - 127) }
            let scales = (0 ..< n).map { _ in abs(unit()) / 100 }, norms = (0 ..< n).map { _ in 0.5 + abs(unit()) }
            let cids = (0 ..< n).map { _ in UInt8(g.next() % UInt64(centroidCount)) }
            let centroids = (0 ..< centroidCount * d).map { _ in unit() }
            let rows: [UInt32] = [49, 0, 7, 7, 23, 1]
            let expected = rows.flatMap { r -> [Float] in
                let r = Int(r)
                return (0 ..< d).map { j in (centroids[Int(cids[r]) * d + j] + scales[r] * Float(codes[r * d + j])) * norms[r] }
            }
            for path: Int32 in [0, 1, 2] {
                var out = [Float](repeating: .nan, count: rows.count * d)
                let taken = idx_decode_rows_with(path, rows.count, d, rows, codes, scales, norms, cids, centroids, &out)
                XCTAssertEqual(out.map(\.bitPattern), expected.map(\.bitPattern), "d \(d), path \(taken)")
            }
        }
    }

    /// The scan's query · centroid products (eight centroids at a time, from the table by
    /// dimension) are the bits of a plain loop over each centroid's coordinates in order, with
    /// a centroid count that leaves the last eight part empty.
    func testCentroidDotsAreAPlainLoopsBits() throws {
        let d = 20
        let reader = try build(Synthetic.clustered(count: 700, dimension: d, clusters: 12, noise: 0.4, seed: 3), dimension: d)
        let s = reader.segments[0]
        XCTAssertEqual(s.centroidCount, 10)
        var g = Synthetic.Generator(state: 21)
        for _ in 0 ..< 5 {
            let q = (0 ..< d).map { _ in Float(g.next() % 2_000_001) / 1_000_000 - 1 }
            let expected = (0 ..< s.centroidCount).map { c -> Float in
                var acc: Float = 0
                for j in 0 ..< d { acc += q[j] * s.centroids[c * d + j] }
                return acc
            }
            let got = q.withUnsafeBufferPointer { s.centroidDots($0.baseAddress!) }
            XCTAssertEqual(got.map(\.bitPattern), expected.map(\.bitPattern))
        }
    }

    func testEveryDotPathGivesTheSameSearchResults() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("idx-dots-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let d = 48, n = 3000
        let v = Synthetic.clustered(count: n, dimension: d, clusters: 20, noise: 0.4, seed: 5)
        let meta = Synthetic.metadata(count: n)
        _ = try VectorIndexWriter.write(directory: dir + "/index", embeddings: v, dimension: d, metadata: meta,
                                        provenance: Synthetic.provenance, append: false, standardize: false)
        try AtomicFile.write(Array(v[0 ..< 20 * d]).withUnsafeBytes { Data($0) }, to: dir + "/q.f32")
        var outputs: [String] = []
        for path in ["portable", "avx2", "avx512bw", "avx512vnni"] {
            let r = try IdxExecutable.run(["search", "--index", dir + "/index", "--query-vectors", dir + "/q.f32", "--json", "-k", "10"],
                                          environment: ["IDX_INT8_DOTS": path])
            XCTAssertEqual(r.status, 0, r.stderr)
            outputs.append(r.stdout)
        }
        XCTAssertFalse(outputs[0].isEmpty)
        XCTAssertEqual(outputs[1], outputs[0], "AVX2 path (or the portable one, where the CPU lacks AVX2)")
        XCTAssertEqual(outputs[2], outputs[0], "AVX-512BW path (or the best the CPU has)")
        XCTAssertEqual(outputs[3], outputs[0], "AVX-512 VNNI path (or the best the CPU has)")
    }

    func testTopKKeepsTheBestWhateverThePushOrder() {
        var g = Synthetic.Generator(state: 11)
        // Few distinct scores, so that ties cross the cut; negatives, zeros and -0 among them.
        let scores = (0 ..< 500).map { _ in Float(Int(g.next() % 21) - 10) / 4 * (g.next() % 9 == 0 ? -0.0 : 1) }
        let expected = scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        for k in [1, 7, 100, 499, 500, 600] {
            for seed in 0 ..< 3 {
                var order = Array(scores.indices)
                var h = Synthetic.Generator(state: UInt64(seed))
                if seed > 0 { for i in order.indices.reversed() { order.swapAt(i, Int(h.next() % UInt64(i + 1))) } }
                var top = TopK(capacity: k)
                for i in order { top.push(scores[i], i) }
                XCTAssertEqual(top.ranked(), Array(expected.prefix(k)), "k \(k), order \(seed)")
                XCTAssertEqual(top.keptIndices().sorted(), expected.prefix(k).sorted(), "k \(k), order \(seed)")
                XCTAssertEqual(top.rankedPairs().map(\.score), expected.prefix(k).map { scores[$0] == 0 ? 0 : scores[$0] })
            }
        }
        // Many close scores (a scan's shape), so that compaction splits on low bits, and one
        // score pushed for every index.
        let close = (0 ..< 20_000).map { _ in 0.5 + Float(g.next() % 1_000_000) / 4e6 }
        for values in [close, [Float](repeating: 0.75, count: 5_000)] {
            let best = values.indices.sorted { values[$0] != values[$1] ? values[$0] > values[$1] : $0 < $1 }
            for k in [1, 33, 1_000] {
                var top = TopK(capacity: k)
                for (i, x) in values.enumerated() { top.push(x, i) }
                XCTAssertEqual(top.ranked(), Array(best.prefix(k)), "k \(k) of \(values.count)")
            }
        }
        for x: Float in [-3.5, -1e-30, 0, 1e-30, 0.25, 7, .infinity, -.infinity] {
            XCTAssertEqual(TopK.score(TopK.rankKey(x, 3)), x)
            XCTAssertEqual(TopK.index(TopK.rankKey(x, 3)), 3)
        }
        XCTAssertLessThan(TopK.rankKey(2, 9), TopK.rankKey(1, 0))
        XCTAssertLessThan(TopK.rankKey(-1, 0), TopK.rankKey(-2, 0))
        XCTAssertLessThan(TopK.rankKey(1, 4), TopK.rankKey(1, 5))
    }

    func testRadixSortIsTheStandardSort() {
        var g = Synthetic.Generator(state: 5)
        // Random keys; keys sharing their high bytes (a top-k's); duplicates; one value throughout.
        let shapes: [(String, () -> UInt64)] = [
            ("random", { g.next() }),
            ("shared high bytes", { 0xABCD_EF00_0000_0000 | (g.next() % 1_000_000) }),
            ("duplicates", { g.next() % 7 << 40 }),
            ("one value", { 42 }),
        ]
        for (name, next) in shapes {
            for n in [0, 1, 2, 128, 129, 1_000, 5_003] {
                let drawn = (0 ..< n).map { _ in next() }
                var keys = drawn
                let expected = keys.sorted()
                RadixSort.sort(&keys)
                XCTAssertEqual(keys, expected, "\(name), \(n) keys")
                let ints = drawn.map { Int($0 >> 2) }
                XCTAssertEqual(RadixSort.sorted(ints), ints.sorted(), "\(name), \(n) integers")
            }
        }
    }

    func testReciprocalRankScoresAreTheFormulasSums() {
        var g = Synthetic.Generator(state: 9)
        for (n, range) in [(0, 10), (5, 8), (300, 400), (1_000, 100_000), (1_000, 1_500)] {
            // Two rankings of distinct documents, overlapping more or less with the range's width.
            func ranking() -> [Int] {
                var seen = Set<Int>(), out: [Int] = []
                while out.count < min(n, range) { let i = Int(g.next() % UInt64(range)); if seen.insert(i).inserted { out.append(i) } }
                return out
            }
            let dense = ranking(), lexical = ranking(), w: Float = 0.3
            let fused = VectorSearcher.reciprocalRankScores(dense: dense, lexical: lexical, lexicalWeight: w)
            var expected: [Int: Float] = [:]
            for (r, i) in dense.enumerated() { expected[i, default: 0] += (1 - w) / (60 + Float(r + 1)) }
            for (r, i) in lexical.enumerated() { expected[i, default: 0] += w / (60 + Float(r + 1)) }
            var got: [Int: Float] = [:]
            fused.forEach { i, x in XCTAssertNil(got.updateValue(x, forKey: i), "document \(i) listed twice") }
            XCTAssertEqual(got, expected, "\(n) of \(range)")
            for (r, i) in dense.enumerated() { XCTAssertEqual(fused.denseRank(of: i), r) }
            for i in Set(lexical).subtracting(dense) { XCTAssertNil(fused.denseRank(of: i)) }
            XCTAssertNil(fused.denseRank(of: range + 7))
        }
    }

    func testListAboveIsEveryIndexAboveTheThreshold() {
        var g = Synthetic.Generator(state: 8)
        let x = (0 ..< 1_001).map { _ in Float(Int(g.next() % 41) - 20) / 8 }
        for threshold: Float in [-.infinity, -2.5, 0, 0.125, 2.5, .infinity] {
            var out = [UInt32](repeating: 0, count: x.count)
            let count = idx_list_above(x.count, x, threshold, &out)
            XCTAssertEqual(out.prefix(count).map(Int.init), x.indices.filter { x[$0] > threshold }, "threshold \(threshold)")
        }
    }

    func testMetadataReadsAnyRowInAnyOrderThroughABoundedCache() throws {
        let d = 16, n = 1000
        let r = try build(Synthetic.clustered(count: n, dimension: d, clusters: 5, noise: 1), dimension: d)
        let meta = Synthetic.metadata(count: n)
        var g = Synthetic.Generator(state: 3)
        // The whole cache, then room for one chunk only (every other read decompresses again).
        for limit in [16 << 20, 1] {
            let reader = try VectorIndexReader(directory: dir, verification: .onFirstRead)
            reader.segments[0].metadataCacheBytes = limit
            for _ in 0 ..< 400 {
                let i = Int(g.next() % UInt64(n))
                XCTAssertEqual(try reader.documentMetadata(i), meta[i])
                XCTAssertEqual(try reader.documentId(i), Int64(i))
            }
        }
        XCTAssertEqual(try (0 ..< n).map { try r.documentMetadata($0) }, meta)
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

    /// The scan's candidates for the exact re-rank are the best of the whole index, not the union
    /// of each worker's best: an answer does not depend on how many threads scanned it (idx
    /// search on a laptop and idx serve on two cores answer alike). With as few candidates as
    /// hits, a union of two workers' lists would re-rank twice as many and reorder the list.
    func testAnswersDoNotDependOnTheScanThreads() throws {
        let d = 32, n = 6000
        let v = Synthetic.clustered(count: n, dimension: d, clusters: 30, noise: 1.0, seed: 41)
        let r = try build(v, dimension: d, segments: 4)
        let searcher = VectorSearcher(r)
        let queries = Synthetic.clustered(count: 40, dimension: d, clusters: 30, noise: 1.0, seed: 42)
        for qi in 0 ..< 40 {
            let q = r.prepareQuery(Array(queries[qi * d ..< (qi + 1) * d]))
            let one = try searcher.search(q, k: 10, threads: 1, rerank: 10)
            for threads in [2, 3, 4] {
                XCTAssertEqual(try searcher.search(q, k: 10, threads: threads, rerank: 10), one, "query \(qi), \(threads) threads")
            }
        }
    }

    /// The VectorIndex interface: a batch answers as its queries one by one do, the filter's
    /// excluded document never comes back (and nothing else goes: its exact copy stays), and
    /// `reconstruct` gives the vectors the scores were computed from.
    func testBatchedSearchAndItsFilter() throws {
        let d = 32
        let one = Synthetic.clustered(count: 400, dimension: d, clusters: 12, noise: 0.5, seed: 21)
        let r = try build(one + Array(one[0 ..< d]), dimension: d, segments: 2)  // document 400 is a copy of 0
        let index: any VectorIndex = VectorSearcher(r)
        XCTAssertEqual(index.count, 401)
        let queries = Synthetic.clustered(count: 12, dimension: d, clusters: 12, noise: 0.5, seed: 22)
        let prepared = (0 ..< 12).flatMap { r.prepareQuery(Array(queries[$0 * d ..< ($0 + 1) * d])) }
        let batch = try index.search(prepared, k: 7, filter: SearchFilter())
        XCTAssertEqual(batch.count, 12)
        var row = [Float](repeating: 0, count: d)
        for i in 0 ..< 12 {
            let q = Array(prepared[i * d ..< (i + 1) * d])
            XCTAssertEqual(try index.search(q, k: 7, filter: SearchFilter()), [batch[i]], "query \(i)")
            for h in batch[i] {
                row.withUnsafeMutableBufferPointer { index.reconstruct(h.index, into: $0.baseAddress!) }
                XCTAssertEqual(h.score, zip(row, q).reduce(0) { $0 + $1.0 * $1.1 }, accuracy: 1e-5)
            }
        }
        // Leave-one-out: document 0 searched with its own vector finds its copy first, never itself.
        let own = r.decodedVector(0)
        let first = try index.search(own, k: 3, filter: SearchFilter())[0].map(\.index)
        XCTAssertEqual(Set(first.prefix(2)), [0, 400])
        let without = try index.search(own, k: 3, filter: SearchFilter(excluding: 0))[0].map(\.index)
        XCTAssertEqual(without.first, 400)
        XCTAssertFalse(without.contains(0))
        XCTAssertEqual(Array(without.prefix(2)), Array(first.filter { $0 != 0 }.prefix(2)))
        // With a genre: both rules at once.
        let genre = r.metadata(0).genre
        let filtered = try index.search(own, k: 5, filter: SearchFilter(genre: genre, excluding: 400))[0]
        XCTAssertFalse(filtered.contains { $0.index == 400 })
        for h in filtered { XCTAssertEqual(r.metadata(h.index).genre, genre) }
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
