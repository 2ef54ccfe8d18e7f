import XCTest
import IdxEval

final class EvalMetricsTests: XCTestCase {
    func testClusterSeparationOnHandMadeVectors() throws {
        // Two labels; "a" points along x (±small y), "b" along y.
        let v: [Float] = [
            1, 0,     // a
            1, 1,     // a (45°)
            0, 2,     // b (length ignored)
            0, 1,     // b
        ]
        let s = try EvalMetrics.clusterSeparation(v, dim: 2, labels: ["a", "a", "b", "b"])
        let c45 = 1 - 1 / 2.0.squareRoot()  // cosine distance at 45°
        // intra pairs: (0,1) 45°, (2,3) 0°
        XCTAssertEqual(s.intraPairs, 2)
        XCTAssertEqual(s.intra, c45 / 2, accuracy: 1e-6)
        // inter pairs: (0,2) 90°, (0,3) 90°, (1,2) 45°, (1,3) 45°
        XCTAssertEqual(s.interPairs, 4)
        XCTAssertEqual(s.inter, (1 + 1 + c45 + c45) / 4, accuracy: 1e-6)
        XCTAssertEqual(s.ratio, s.inter / s.intra, accuracy: 1e-9)
        XCTAssertGreaterThan(s.ratio, 1)
    }

    func testClusterSeparationBelowOneWhenLabelsAreMixed() throws {
        let v: [Float] = [1, 0, 0, 1, 1, 0.1, 0.1, 1]
        let s = try EvalMetrics.clusterSeparation(v, dim: 2, labels: ["a", "b", "b", "a"])
        XCTAssertLessThan(s.ratio, 1)
        XCTAssertThrowsError(try EvalMetrics.clusterSeparation(v, dim: 2, labels: ["a", "a", "a", "a"]))
    }

    func testKNNPrecisionOnHandMadeVectors() throws {
        // Base: 3 "x" documents near the x axis, 3 "y" near the y axis.
        let base: [Float] = [1, 0, 1, 0.1, 1, 0.2, 0, 1, 0.1, 1, 0.2, 1]
        let baseLabels = ["x", "x", "x", "y", "y", "y"]
        // Query 0 along x, labelled x: its 2 nearest are base 0 and 1 → 2/2.
        // Query 1 at 45°, labelled y: base 2 (1, .2) and base 5 (.2, 1) tie exactly; the lower
        // index comes first, so its 2 nearest are base 2 (x) and 5 (y) → 1/2.
        let queries: [Float] = [1, 0, 1, 1]
        let r = try EvalMetrics.knnPrecision(queries: queries, queryLabels: ["x", "y"], base: base,
                                             baseLabels: baseLabels, dim: 2, k: 2)
        let nn = EvalMetrics.nearestNeighbours(queries: queries, base: base, dim: 2, k: 2)
        XCTAssertEqual(nn[0], [0, 1])
        XCTAssertEqual(nn[1], [2, 5])
        XCTAssertEqual(r.precision, (1.0 + 0.5) / 2, accuracy: 1e-9)
        XCTAssertEqual(r.queries, 2)
    }

    func testKNNLeaveOneOutExcludesOnlyTheQueryItself() throws {
        // Duplicates: a document's exact twin must still count (nothing but itself is excluded).
        let base: [Float] = [1, 0, 1, 0, 0, 1, 0, 1, 1, 0.05]
        let labels = ["x", "x", "y", "y", "y"]
        let nn = EvalMetrics.nearestNeighbours(queries: base, base: base, dim: 2, k: 1, excludeSelf: true)
        XCTAssertEqual(nn.map { $0 }, [[1], [0], [3], [2], [0]])
        let r = try EvalMetrics.knnPrecision(queries: base, queryLabels: labels, base: base, baseLabels: labels,
                                             dim: 2, k: 1, leaveOneOut: true)
        XCTAssertEqual(r.precision, 4.0 / 5.0, accuracy: 1e-9)
        XCTAssertTrue(r.leaveOneOut)
        XCTAssertThrowsError(try EvalMetrics.knnPrecision(queries: base, queryLabels: labels, base: base,
                                                          baseLabels: labels, dim: 2, k: 5, leaveOneOut: true))
    }

    func testNearestNeighboursMatchBruteForceAcrossBlocks() {
        var rng = SystemRandomNumberGenerator()
        let dim = 7, nb = 300, nq = 50
        let base = (0 ..< nb * dim).map { _ in Float.random(in: -1 ... 1, using: &rng) }
        let queries = (0 ..< nq * dim).map { _ in Float.random(in: -1 ... 1, using: &rng) }
        let nn = EvalMetrics.nearestNeighbours(queries: queries, base: base, dim: dim, k: 5)
        let qn = EvalMetrics.normalizedRows(queries, dim: dim), bn = EvalMetrics.normalizedRows(base, dim: dim)
        for i in 0 ..< nq {
            let scores = (0 ..< nb).map { j in (0 ..< dim).reduce(Float(0)) { $0 + qn[i * dim + $1] * bn[j * dim + $1] } }
            let expected = (0 ..< nb).sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
            XCTAssertEqual(nn[i], Array(expected.prefix(5)), "query \(i)")
        }
    }
}
