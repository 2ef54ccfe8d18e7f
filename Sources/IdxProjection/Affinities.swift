import COpenBLAS
import Foundation
import IdxBase

/// A sparse symmetric matrix in compressed sparse rows: row i's entries are
/// `cols[rowStart[i] ..< rowStart[i + 1]]` with values `vals[...]`.
public struct CSRMatrix: Sendable {
    public var n: Int
    public var rowStart: [Int]
    public var cols: [Int32]
    public var vals: [Double]
}

public enum Affinities {
    /// Exact k nearest neighbours (squared euclidean) of every row of x (n × d),
    /// self excluded, by blocked sgemm: |a-b|² = |a|² + |b|² - 2 a·b.
    /// Returns n × k indices and squared distances, each row ascending.
    public static func nearestNeighbors(_ x: [Float], n: Int, d: Int, k: Int) -> (indices: [Int32], sqDistances: [Float]) {
        precondition(k >= 1 && k < n)
        var norms = [Float](repeating: 0, count: n)
        x.withUnsafeBufferPointer { xp in
            for i in 0 ..< n {
                var s: Float = 0
                for c in 0 ..< d { s += xp[i * d + c] * xp[i * d + c] }
                norms[i] = s
            }
        }
        var indices = [Int32](repeating: 0, count: n * k)
        var dists = [Float](repeating: 0, count: n * k)
        let block = 512
        var gram = [Float](repeating: 0, count: block * n)   // block × n dot products
        let chunks = 8
        x.withUnsafeBufferPointer { xp in
            norms.withUnsafeBufferPointer { np in
                indices.withUnsafeMutableBufferPointer { ip in
                    dists.withUnsafeMutableBufferPointer { dp in
                        gram.withUnsafeMutableBufferPointer { gp in
                            var b0 = 0
                            while b0 < n {
                                let rows = min(block, n - b0)
                                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(n), Int32(d), 1,
                                            xp.baseAddress! + b0 * d, Int32(d), xp.baseAddress, Int32(d), 0,
                                            gp.baseAddress, Int32(n))
                                let per = (rows + chunks - 1) / chunks
                                let first = b0
                                // Chunk ch reads gram rows lo ..< hi and the norms, and writes only
                                // its own points' rows first + lo ..< first + hi of indices and distances.
                                let shared = SharedWithWorkers((gp: gp, dp: dp, ip: ip, np: np))
                                DispatchQueue.concurrentPerform(iterations: chunks) { ch in
                                    let (gp, dp, ip, np) = shared.value
                                    let lo = ch * per, hi = min(rows, lo + per)
                                    if lo >= hi { return }
                                    for r in lo ..< hi {
                                        let i = first + r
                                        let g = gp.baseAddress! + r * n
                                        let hd = dp.baseAddress! + i * k   // max-heap on distance
                                        let hi_ = ip.baseAddress! + i * k
                                        var size = 0
                                        let ni = np[i]
                                        for j in 0 ..< n where j != i {
                                            let dist = max(ni + np[j] - 2 * g[j], 0)
                                            if size < k {
                                                // sift up
                                                var c = size; size += 1
                                                while c > 0 {
                                                    let p = (c - 1) >> 1
                                                    if hd[p] >= dist { break }
                                                    hd[c] = hd[p]; hi_[c] = hi_[p]; c = p
                                                }
                                                hd[c] = dist; hi_[c] = Int32(j)
                                            } else if dist < hd[0] {
                                                // replace root, sift down
                                                var c = 0
                                                while true {
                                                    var m = 2 * c + 1
                                                    if m >= k { break }
                                                    if m + 1 < k && hd[m + 1] > hd[m] { m += 1 }
                                                    if hd[m] <= dist { break }
                                                    hd[c] = hd[m]; hi_[c] = hi_[m]; c = m
                                                }
                                                hd[c] = dist; hi_[c] = Int32(j)
                                            }
                                        }
                                        // heap -> ascending order (heap sort in place)
                                        var end = k - 1
                                        while end > 0 {
                                            let td = hd[0], ti = hi_[0]
                                            let ld = hd[end], li = hi_[end]
                                            hd[end] = td; hi_[end] = ti
                                            var c = 0
                                            while true {
                                                var m = 2 * c + 1
                                                if m >= end { break }
                                                if m + 1 < end && hd[m + 1] > hd[m] { m += 1 }
                                                if hd[m] <= ld { break }
                                                hd[c] = hd[m]; hi_[c] = hi_[m]; c = m
                                            }
                                            hd[c] = ld; hi_[c] = li
                                            end -= 1
                                        }
                                    }
                                }
                                b0 += rows
                            }
                        }
                    }
                }
            }
        }
        return (indices, dists)
    }

    /// Binary search for the precision β of one point so that the entropy of
    /// p_j ∝ exp(-β d_j) equals log(perplexity) (natural log, tolerance 1e-5,
    /// at most 100 steps, as scikit-learn's _binary_search_perplexity).
    /// Writes the normalised conditional probabilities into `p`; returns β.
    @inline(__always)
    static func calibrate(_ dist: UnsafePointer<Float>, _ p: UnsafeMutablePointer<Double>, count m: Int,
                          perplexity: Double) -> Double {
        let target = log(perplexity)
        var beta = 1.0, betaMin = -Double.infinity, betaMax = Double.infinity
        // Shifting by the smallest distance leaves p and the entropy unchanged but avoids underflow.
        var dmin = Double.infinity
        for j in 0 ..< m { dmin = min(dmin, Double(dist[j])) }
        for _ in 0 ..< 100 {
            var sum = 0.0
            for j in 0 ..< m {
                let v = exp(-(Double(dist[j]) - dmin) * beta)
                p[j] = v; sum += v
            }
            if sum == 0 { sum = 1e-8 }
            var sumDP = 0.0
            for j in 0 ..< m { p[j] /= sum; sumDP += (Double(dist[j]) - dmin) * p[j] }
            let entropy = log(sum) + beta * sumDP
            let diff = entropy - target
            if abs(diff) <= 1e-5 { break }
            if diff > 0 {
                betaMin = beta
                beta = betaMax == .infinity ? beta * 2 : (beta + betaMax) / 2
            } else {
                betaMax = beta
                beta = betaMin == -.infinity ? beta / 2 : (beta + betaMin) / 2
            }
        }
        return beta
    }

    /// Entropy (natural log) of a probability row; for tests.
    static func entropy(_ p: [Double]) -> Double {
        var h = 0.0
        for v in p where v > 0 { h -= v * log(v) }
        return h
    }

    /// Sparse joint affinities from kNN: conditional p_{j|i} over each point's
    /// k neighbours, then P = (P_cond + P_condᵀ) / sum, as scikit-learn's barnes_hut path.
    public static func sparseJoint(indices: [Int32], sqDistances: [Float], n: Int, k: Int,
                                   perplexity: Double) -> CSRMatrix {
        var cond = [Double](repeating: 0, count: n * k)
        let chunks = 8, per = (n + chunks - 1) / chunks
        sqDistances.withUnsafeBufferPointer { dp in
            cond.withUnsafeMutableBufferPointer { cp in
                // Chunk ch reads and writes only the rows of its own points, lo ..< hi.
                let shared = SharedWithWorkers((dp: dp, cp: cp))
                DispatchQueue.concurrentPerform(iterations: chunks) { ch in
                    let (dp, cp) = shared.value
                    let lo = ch * per, hi = min(n, lo + per)
                    if lo >= hi { return }
                    for i in lo ..< hi {
                        _ = calibrate(dp.baseAddress! + i * k, cp.baseAddress! + i * k, count: k, perplexity: perplexity)
                    }
                }
            }
        }
        // Symmetrise: entry (i, j) and (j, i) from each conditional; merge duplicates per row.
        var counts = [Int](repeating: 0, count: n + 1)
        for i in 0 ..< n {
            for e in 0 ..< k { counts[i] += 1; counts[Int(indices[i * k + e])] += 1 }
        }
        var start = [Int](repeating: 0, count: n + 1)
        for i in 0 ..< n { start[i + 1] = start[i] + counts[i] }
        var fill = Array(start[0 ..< n])
        var cols = [Int32](repeating: 0, count: start[n])
        var vals = [Double](repeating: 0, count: start[n])
        for i in 0 ..< n {
            for e in 0 ..< k {
                let j = Int(indices[i * k + e]), v = cond[i * k + e]
                cols[fill[i]] = Int32(j); vals[fill[i]] = v; fill[i] += 1
                cols[fill[j]] = Int32(i); vals[fill[j]] = v; fill[j] += 1
            }
        }
        var outStart = [Int](repeating: 0, count: n + 1)
        var outCols = [Int32](); outCols.reserveCapacity(start[n])
        var outVals = [Double](); outVals.reserveCapacity(start[n])
        var order = [Int]()
        var total = 0.0
        for i in 0 ..< n {
            order.removeAll(keepingCapacity: true)
            for e in start[i] ..< start[i + 1] { order.append(e) }
            order.sort { cols[$0] < cols[$1] }
            var last: Int32 = -1
            for e in order {
                if cols[e] == last { outVals[outVals.count - 1] += vals[e] } else {
                    outCols.append(cols[e]); outVals.append(vals[e]); last = cols[e]
                }
                total += vals[e]
            }
            outStart[i + 1] = outCols.count
        }
        let norm = 1 / max(total, Double.ulpOfOne)
        for e in 0 ..< outVals.count { outVals[e] *= norm }
        return CSRMatrix(n: n, rowStart: outStart, cols: outCols, vals: outVals)
    }

    /// Dense joint affinities over all pairs (scikit-learn's exact path):
    /// n × n, symmetric, sums to 1, every off-diagonal entry at least machine epsilon.
    public static func denseJoint(_ x: [Float], n: Int, d: Int, perplexity: Double) -> [Double] {
        var dist = [Float](repeating: 0, count: n * (n - 1))  // row i: distances to j != i
        for i in 0 ..< n {
            var e = 0
            for j in 0 ..< n where j != i {
                var s = 0.0
                for c in 0 ..< d { let t = Double(x[i * d + c]) - Double(x[j * d + c]); s += t * t }
                dist[i * (n - 1) + e] = Float(s); e += 1
            }
        }
        var cond = [Double](repeating: 0, count: n * (n - 1))
        dist.withUnsafeBufferPointer { dp in
            cond.withUnsafeMutableBufferPointer { cp in
                for i in 0 ..< n {
                    _ = calibrate(dp.baseAddress! + i * (n - 1), cp.baseAddress! + i * (n - 1), count: n - 1, perplexity: perplexity)
                }
            }
        }
        var p = [Double](repeating: 0, count: n * n)
        for i in 0 ..< n {
            var e = 0
            for j in 0 ..< n where j != i { p[i * n + j] += cond[i * (n - 1) + e]; p[j * n + i] += cond[i * (n - 1) + e]; e += 1 }
        }
        let total = max(p.reduce(0, +), Double.ulpOfOne)
        for i in 0 ..< n { for j in 0 ..< n where j != i { p[i * n + j] = max(p[i * n + j] / total, Double.ulpOfOne) } }
        return p
    }

    /// A dense joint matrix as CSR (all off-diagonal entries); lets the Barnes-Hut path run on exact P.
    public static func csr(fromDense p: [Double], n: Int) -> CSRMatrix {
        var start = [0], cols = [Int32](), vals = [Double]()
        for i in 0 ..< n {
            for j in 0 ..< n where j != i { cols.append(Int32(j)); vals.append(p[i * n + j]) }
            start.append(cols.count)
        }
        return CSRMatrix(n: n, rowStart: start, cols: cols, vals: vals)
    }
}
