import XCTest
import IdxBase
import IdxModel
@testable import IdxProjection

final class TSNETests: XCTestCase {
    func randomMatrix(_ n: Int, _ d: Int, seed: UInt64, scale: Double = 1) -> [Float] {
        var rng = SplitMix64(state: seed)
        return (0 ..< n * d).map { _ in Float(scale * rng.normal()) }
    }

    /// Perplexity calibration: every row's entropy reaches log(perplexity).
    func testPerplexityCalibrationReachesTargetEntropy() {
        let n = 60, d = 5
        let x = randomMatrix(n, d, seed: 7)
        let k = 40
        let nn = Affinities.nearestNeighbors(x, n: n, d: d, k: k)
        for perplexity in [5.0, 12.0, 30.0] {
            for i in 0 ..< n {
                var p = [Double](repeating: 0, count: k)
                nn.sqDistances.withUnsafeBufferPointer { dp in
                    p.withUnsafeMutableBufferPointer { pp in
                        _ = Affinities.calibrate(dp.baseAddress! + i * k, pp.baseAddress!, count: k, perplexity: perplexity)
                    }
                }
                XCTAssertEqual(p.reduce(0, +), 1, accuracy: 1e-9)
                XCTAssertEqual(Affinities.entropy(p), log(perplexity), accuracy: 1e-4, "row \(i) perplexity \(perplexity)")
            }
        }
    }

    /// Exact kNN by blocked sgemm agrees with brute force.
    func testNearestNeighborsMatchBruteForce() {
        let n = 700, d = 6, k = 9   // > one 512-row block
        let x = randomMatrix(n, d, seed: 3)
        let nn = Affinities.nearestNeighbors(x, n: n, d: d, k: k)
        for i in stride(from: 0, to: n, by: 37) {
            var all = [(Double, Int)]()
            for j in 0 ..< n where j != i {
                var s = 0.0
                for c in 0 ..< d { let t = Double(x[i * d + c] - x[j * d + c]); s += t * t }
                all.append((s, j))
            }
            all.sort { $0.0 < $1.0 }
            for e in 0 ..< k {
                XCTAssertEqual(Double(nn.sqDistances[i * k + e]), all[e].0, accuracy: 1e-4)
            }
            XCTAssertEqual(Set((0 ..< k).map { Int(nn.indices[i * k + $0]) }), Set(all[0 ..< k].map { $0.1 }))
        }
    }

    /// Sparse joint P is symmetric and sums to 1.
    func testSparseJointIsSymmetricAndNormalised() {
        let n = 80, d = 4, k = 15
        let x = randomMatrix(n, d, seed: 11)
        let nn = Affinities.nearestNeighbors(x, n: n, d: d, k: k)
        let p = Affinities.sparseJoint(indices: nn.indices, sqDistances: nn.sqDistances, n: n, k: k, perplexity: 5)
        var dense = [Double](repeating: 0, count: n * n)
        for i in 0 ..< n { for e in p.rowStart[i] ..< p.rowStart[i + 1] { dense[i * n + Int(p.cols[e])] = p.vals[e] } }
        XCTAssertEqual(dense.reduce(0, +), 1, accuracy: 1e-9)
        for i in 0 ..< n { for j in 0 ..< n { XCTAssertEqual(dense[i * n + j], dense[j * n + i], accuracy: 1e-15) } }
    }

    /// The exact gradient equals central finite differences of KL(P || Q).
    func testExactGradientMatchesFiniteDifferences() {
        let n = 9, d = 4
        let x = randomMatrix(n, d, seed: 5)
        let p = Affinities.denseJoint(x, n: n, d: d, perplexity: 3)
        var rng = SplitMix64(state: 9)
        let y = (0 ..< 2 * n).map { _ in rng.normal() }
        var grad = [Double](repeating: 0, count: 2 * n)
        TSNE.exactGradient(p: p, y: y, n: n, exaggeration: 1, grad: &grad, computeKL: false)
        let h = 1e-6
        for e in 0 ..< 2 * n {
            var yp = y, ym = y
            yp[e] += h; ym[e] -= h
            let fd = (TSNE.exactKL(p: p, y: yp, n: n) - TSNE.exactKL(p: p, y: ym, n: n)) / (2 * h)
            XCTAssertEqual(grad[e], fd, accuracy: 1e-6 + 1e-5 * abs(fd), "coordinate \(e)")
        }
    }

    /// Barnes-Hut with θ = 0 and the full P gives the exact gradient and KL; θ = 0.5 stays close.
    func testBarnesHutThetaZeroEqualsExact() {
        let n = 40, d = 5
        let x = randomMatrix(n, d, seed: 21)
        let dense = Affinities.denseJoint(x, n: n, d: d, perplexity: 8)
        let sparse = Affinities.csr(fromDense: dense, n: n)
        var rng = SplitMix64(state: 2)
        var y = (0 ..< 2 * n).map { _ in 3 * rng.normal() }
        y[2 * 7] = y[2 * 3]; y[2 * 7 + 1] = y[2 * 3 + 1]   // a duplicate point
        var exact = [Double](repeating: 0, count: 2 * n), bh = exact, bh5 = exact
        let klExact = TSNE.exactGradient(p: dense, y: y, n: n, exaggeration: 12, grad: &exact, computeKL: true)!
        let tree = QuadTree()
        let klBH = TSNE.barnesHutGradient(p: sparse, y: y, n: n, exaggeration: 12, theta: 0, tree: tree, grad: &bh, computeKL: true)!
        XCTAssertEqual(klBH, klExact, accuracy: 1e-9)
        for e in 0 ..< 2 * n { XCTAssertEqual(bh[e], exact[e], accuracy: 1e-10 + 1e-9 * abs(exact[e])) }
        TSNE.barnesHutGradient(p: sparse, y: y, n: n, exaggeration: 12, theta: 0.5, tree: tree, grad: &bh5, computeKL: false)
        var num = 0.0, den = 0.0
        for e in 0 ..< 2 * n { num += (bh5[e] - exact[e]) * (bh5[e] - exact[e]); den += exact[e] * exact[e] }
        XCTAssertLessThan((num / den).squareRoot(), 0.1)
        XCTAssertGreaterThan(num, 0, "θ = 0.5 really summarises cells")
    }

    /// Two well-separated clusters stay separated; same seed gives the same result; bad input is refused.
    func testSeparatesClustersReproduciblyAndRefusesBadInput() throws {
        let n = 120, d = 8
        var x = randomMatrix(n, d, seed: 4, scale: 0.3)
        for i in 0 ..< n / 2 { x[i * d] += 10 }
        var o = TSNEOptions()
        o.perplexity = 10; o.iterations = 300; o.gradient = .barnesHut
        for initialization in [TSNEOptions.Initialization.pca, .random] {
            o.initialization = initialization
            let a = try TSNE.run(x, n: n, d: d, options: o)
            let b = try TSNE.run(x, n: n, d: d, options: o)
            XCTAssertEqual(a.embedding, b.embedding)
            // Nearest embedded neighbour of every point is in its own cluster.
            let y = a.embedding
            for i in 0 ..< n {
                var best = Float.infinity, bj = -1
                for j in 0 ..< n where j != i {
                    let dx = y[2 * i] - y[2 * j], dy = y[2 * i + 1] - y[2 * j + 1]
                    if dx * dx + dy * dy < best { best = dx * dx + dy * dy; bj = j }
                }
                XCTAssertEqual(i < n / 2, bj < n / 2)
            }
            XCTAssertTrue(a.klDivergence.isFinite)
        }
        o.perplexity = Double(n)
        XCTAssertThrowsError(try TSNE.run(x, n: n, d: d, options: o)) { e in
            XCTAssertTrue((e as? IdxError)?.message.contains("perplexity") ?? false)
        }
        XCTAssertThrowsError(try TSNE.run([1, 2, 3, 4], n: 2, d: 2, options: TSNEOptions()))
    }
}
