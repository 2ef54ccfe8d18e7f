import Foundation
import XCTest
import IdxStore

/// `idx index --procs 2` against `--procs 1` on the committed sample corpus, and a rank
/// that fails before the publish (the previous generation must keep serving).
final class ParallelIndexTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var work: URL!
    var corpus: String { work.appendingPathComponent("corpus").path }
    var model: String { work.appendingPathComponent("model").path }

    override func setUpWithError() throws {
        try IdxExecutable.requireMpirun()
        work = FileManager.default.temporaryDirectory.appendingPathComponent("idx-parallel-index-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let csv = Self.root.appendingPathComponent("corpora/sample/movies.csv").path
        let r = try IdxExecutable.run(["ingest", csv, "--out", corpus])
        XCTAssertEqual(r.status, 0, r.stderr)
        let t = try IdxExecutable.run(["train", "--corpus", corpus, "--out", model, "--steps", "5", "--threads", "1"])
        XCTAssertEqual(t.status, 0, t.stderr)
    }

    override func tearDownWithError() throws {
        if let work { try? FileManager.default.removeItem(at: work) }
    }

    static func floats(_ path: String) throws -> [Float] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    func testTwoRanksGiveTheSameVectorsAsOne() throws {
        let one = work.appendingPathComponent("one").path, two = work.appendingPathComponent("two").path
        let common = ["index", "--model", model, "--corpus", corpus, "--standardize"]
        let r1 = try IdxExecutable.run(common + ["--out", one, "--procs", "1", "--dump-vectors", one + ".f32"])
        XCTAssertEqual(r1.status, 0, r1.stderr)
        let r2 = try IdxExecutable.run(common + ["--out", two, "--procs", "2", "--dump-vectors", two + ".f32"])
        XCTAssertEqual(r2.status, 0, r2.stderr)
        XCTAssertTrue(r2.stderr.contains("on 2 ranks"), r2.stderr)

        // The embeddings: the same function of the same documents (batches differ at the split).
        let e1 = try Self.floats(one + ".f32"), e2 = try Self.floats(two + ".f32")
        XCTAssertEqual(e1.count, e2.count)
        XCTAssertFalse(e1.isEmpty)
        var worst: Float = 0
        for i in e1.indices { worst = max(worst, abs(e1[i] - e2[i])) }
        XCTAssertLessThanOrEqual(worst, 1e-5)

        // The indexes: one segment per rank, documents in corpus order with their corpus ids and
        // metadata, the same global standardisation, and the same vectors up to int8 quantization.
        let a = try VectorIndexReader(directory: one), b = try VectorIndexReader(directory: two)
        XCTAssertEqual(a.manifest.segments.count, 1)
        XCTAssertEqual(b.manifest.segments.count, 2)
        XCTAssertEqual(a.count, b.count)
        let sa = try XCTUnwrap(a.manifest.standardization), sb = try XCTUnwrap(b.manifest.standardization)
        for j in sa.mean.indices {
            XCTAssertEqual(sa.mean[j], sb.mean[j], accuracy: 1e-5)
            XCTAssertEqual(sa.std[j], sb.std[j], accuracy: 1e-5)
        }
        let d = a.manifest.dimension
        let va = a.dequantizedVectors(), vb = b.dequantizedVectors()
        var worstCosine: Float = 1
        for i in 0 ..< a.count {
            XCTAssertEqual(try a.documentId(i), Int64(i))
            XCTAssertEqual(try b.documentId(i), Int64(i))
            XCTAssertEqual(try a.documentMetadata(i), try b.documentMetadata(i))
            var dot: Float = 0, na: Float = 0, nb: Float = 0
            for j in 0 ..< d { dot += va[i * d + j] * vb[i * d + j]; na += va[i * d + j] * va[i * d + j]; nb += vb[i * d + j] * vb[i * d + j] }
            worstCosine = min(worstCosine, dot / (na * nb).squareRoot())
        }
        XCTAssertGreaterThan(worstCosine, 0.99, "the same vectors, each quantized against its own segment's centroids")
    }

    func testFailedRankLeavesThePreviousGenerationServing() throws {
        let out = work.appendingPathComponent("index").path
        let first = try IdxExecutable.run(["index", "--model", model, "--corpus", corpus, "--out", out, "--procs", "2"])
        XCTAssertEqual(first.status, 0, first.stderr)
        let before = try VectorIndexReader(directory: out)
        XCTAssertEqual(before.manifest.generation, 1)

        let failed = try IdxExecutable.run(["index", "--model", model, "--corpus", corpus, "--out", out, "--procs", "2"],
                                           environment: ["IDX_TEST_FAIL_RANK": "1"])
        XCTAssertNotEqual(failed.status, 0, failed.stderr)
        XCTAssertTrue(failed.stderr.contains("rank 1"), failed.stderr)
        let after = try VectorIndexReader(directory: out)
        XCTAssertEqual(after.manifest, before.manifest, "CURRENT still names generation 1")
        XCTAssertEqual(after.count, before.count)

        // The next run publishes generation 2 and removes the failed run's orphaned segments.
        let again = try IdxExecutable.run(["index", "--model", model, "--corpus", corpus, "--out", out, "--procs", "2"])
        XCTAssertEqual(again.status, 0, again.stderr)
        let now = try VectorIndexReader(directory: out)
        XCTAssertEqual(now.manifest.generation, 2)
        let files = try FileManager.default.contentsOfDirectory(atPath: out + "/segments").filter { $0.hasSuffix(".idxseg") }
        let kept = Set((before.manifest.segments + now.manifest.segments).map { String($0.file.dropFirst("segments/".count)) })
        XCTAssertEqual(Set(files), kept)
    }
}
