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

    func testKNNPrecisionCountsNeighboursSharingAGenre() throws {
        let baseLabels = ["x", "x", "x", "y", "y", "Drama, y"]
        // Query 0 (x) found 0 and 1: 2/2. Query 1 (y) found 2 (x) and 5 (a film of two genres, y among them): 1/2.
        let r = try EvalMetrics.knnPrecision(neighbours: [[0, 1], [2, 5]], queryLabels: ["x", "y"], baseLabels: baseLabels, k: 2)
        XCTAssertEqual(r.precision, (1.0 + 0.5) / 2, accuracy: 1e-9)
        XCTAssertEqual(r.queries, 2)
        XCTAssertEqual(r.neighbours, [[0, 1], [2, 5]])
        // A short list counts its missing places as misses; only the first k count.
        XCTAssertEqual(try EvalMetrics.knnPrecision(neighbours: [[0], [3, 4, 0]], queryLabels: ["x", "y"], baseLabels: baseLabels, k: 2).precision,
                       (0.5 + 1.0) / 2, accuracy: 1e-9)
        XCTAssertThrowsError(try EvalMetrics.knnPrecision(neighbours: [[0]], queryLabels: ["x", "y"], baseLabels: baseLabels, k: 1))
        XCTAssertThrowsError(try EvalMetrics.knnPrecision(neighbours: [[0]], queryLabels: ["x"], baseLabels: baseLabels, k: 6, leaveOneOut: true))
        // Reports carry the figure, not a list a query.
        let json = String(decoding: try JSONEncoder().encode(r), as: UTF8.self)
        XCTAssertFalse(json.contains("neighbours"), json)
    }
}
