import Foundation
import IdxBase
import IdxStore

/// `idx search --bench` (scripts/bench-search): the vector scan timed on raw float32 queries,
/// with one thread and with `threads`, and its recall against exact float32 cosine when the
/// base vectors are given.
public struct ScanBenchmark {
    public var k: Int
    public var genre: String?
    public var threads: Int
    public var rerank: Int?

    public init(k: Int, genre: String?, threads: Int, rerank: Int?) {
        self.k = k; self.genre = genre; self.threads = threads; self.rerank = rerank
    }

    /// The report's lines (per-query times, then recall when `reference` is given).
    public func run(_ searcher: VectorSearcher, queries file: String, reference: String?) throws -> [String] {
        let reader = searcher.reader
        let d = reader.dimension
        let (q, _) = try RawVectors.read(file, dimension: d)
        let nq = q.count / d
        let queries = (0 ..< nq).map { reader.prepareQuery(Array(q[$0 * d ..< ($0 + 1) * d])) }
        func cpuNow() -> Double {
            var t = timespec(); clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
            return Double(t.tv_sec) * 1e3 + Double(t.tv_nsec) / 1e6
        }
        func time(threads: Int) throws -> (Double, Double, [[SearchHit]]) {
            _ = try searcher.search(queries[0], k: k, genre: genre, threads: threads, rerank: rerank) // warm-up
            let t0 = DispatchTime.now().uptimeNanoseconds, c0 = cpuNow()
            var all: [[SearchHit]] = []
            for query in queries { all.append(try searcher.search(query, k: k, genre: genre, threads: threads, rerank: rerank)) }
            return (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6 / Double(nq), (cpuNow() - c0) / Double(nq), all)
        }
        let (single, singleCPU, hits) = try time(threads: 1)
        let (multi, _, _) = try time(threads: threads)
        var lines = [String(format: "scan: %d vectors x %d dims, %d queries, k=%d: %.3f ms/query wall (%.3f ms CPU) with 1 thread; %.3f ms/query wall with %d threads; int8 dots: %@",
                            reader.count, d, nq, k, single, singleCPU, multi, threads > 0 ? threads : Cores.available,
                            VectorSearcher.dotKernel)]
        if let reference {
            var (base, _) = try RawVectors.read(reference, dimension: d)
            guard base.count == reader.count * d else {
                throw IdxError("\(reference): holds \(base.count / d) vectors, the index \(reader.count); pass the file the index was built from.")
            }
            VectorIndexWriter.prepare(&base, dimension: d, standardization: reader.manifest.standardization)
            var total = 0.0
            base.withUnsafeBufferPointer { b in
                for (i, query) in queries.enumerated() {
                    let exact = ExactSearch.scores(b, dimension: d, query: query)
                    total += ExactSearch.recall(returned: hits[i].map(\.index), exactScores: exact, k: k)
                }
            }
            lines.append(String(format: "recall@%d (tie-aware, vs exact float32 cosine): %.4f", k, total / Double(nq)))
        }
        return lines
    }
}
