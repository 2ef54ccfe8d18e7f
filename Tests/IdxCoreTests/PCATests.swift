import XCTest
import IdxModel
import IdxProjection

final class PCATests: XCTestCase {
    /// Data built from a known decomposition: X = mean + U diag(s) Vᵀ with orthonormal V
    /// (a rotation) and centred, mutually orthogonal score columns U, so the covariance
    /// eigenvectors are V's columns and the eigenvalues s_c² |u_c|² / (n-1).
    func testRecoversKnownDecomposition() throws {
        let n = 8, d = 3
        // Orthonormal basis: a rotation about z by 30° then about x by 50°.
        let a = Double.pi / 6, b = 5 * Double.pi / 18
        let rz: [[Double]] = [[cos(a), -sin(a), 0], [sin(a), cos(a), 0], [0, 0, 1]]
        let rx: [[Double]] = [[1, 0, 0], [0, cos(b), -sin(b)], [0, sin(b), cos(b)]]
        var v = [[Double]](repeating: [0, 0, 0], count: 3)
        for r in 0 ..< 3 { for c in 0 ..< 3 { for k in 0 ..< 3 { v[r][c] += rx[r][k] * rz[k][c] } } }
        // Orthogonal centred columns from Walsh-like sign patterns, scaled 4, 2, 0.5.
        let u: [[Double]] = [[1, 1, 1, 1, -1, -1, -1, -1], [1, 1, -1, -1, 1, 1, -1, -1], [1, -1, 1, -1, 1, -1, 1, -1]]
        let s = [4.0, 2.0, 0.5]
        let mean = [3.0, -1.0, 0.25]
        var x = [Float](repeating: 0, count: n * d)
        for i in 0 ..< n { for r in 0 ..< d {
            var t = mean[r]
            for c in 0 ..< 3 { t += u[c][i] * s[c] * v[r][c] }
            x[i * d + r] = Float(t)
        } }
        let pca = try PCA.fit(x, rows: n, dim: d, components: 3)
        let eig = s.map { $0 * $0 * Double(n) / Double(n - 1) }
        let total = eig.reduce(0, +)
        for c in 0 ..< 3 {
            XCTAssertEqual(pca.explainedVariance[c], eig[c], accuracy: 1e-4 * eig[0])
            XCTAssertEqual(pca.explainedVarianceRatio[c], eig[c] / total, accuracy: 1e-6)
            // Component c equals ± column c of V; the coordinates equal ± s_c u_c.
            var dot = 0.0
            for r in 0 ..< d { dot += Double(pca.components[c * d + r]) * v[r][c] }
            XCTAssertEqual(abs(dot), 1, accuracy: 1e-5)
            let sign = dot < 0 ? -1.0 : 1.0
            for i in 0 ..< n {
                XCTAssertEqual(Double(pca.coordinates[i * 3 + c]), sign * s[c] * u[c][i], accuracy: 1e-4)
            }
        }
        for r in 0 ..< d { XCTAssertEqual(Double(pca.mean[r]), mean[r], accuracy: 1e-5) }
    }

    func testSignConventionAndErrors() throws {
        var rng = SplitMix64(state: 1)
        let n = 50, d = 4
        let x = (0 ..< n * d).map { _ in Float(rng.normal()) }
        let pca = try PCA.fit(x, rows: n, dim: d, components: 2)
        for c in 0 ..< 2 {
            let row = pca.components[c * d ..< (c + 1) * d]
            let big = row.max { abs($0) < abs($1) }!
            XCTAssertGreaterThan(big, 0, "largest entry of each component is positive")
        }
        XCTAssertGreaterThanOrEqual(pca.explainedVariance[0], pca.explainedVariance[1])
        XCTAssertThrowsError(try PCA.fit([1, 2], rows: 1, dim: 2, components: 1))
    }
}
