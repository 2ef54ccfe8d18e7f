import COpenBLAS
import Foundation
import IdxBase

/// A principal component analysis of the rows of an n × d matrix.
public struct PCAResult {
    public var components: [Float]             // k × d, row c = unit direction of component c
    public var explainedVariance: [Double]     // k, eigenvalues of the covariance (ddof 1)
    public var explainedVarianceRatio: [Double] // k, eigenvalue / total variance
    public var mean: [Float]                   // d
    public var coordinates: [Float]            // n × k, the centred rows projected on the components
    public var k: Int
}

public enum PCA {
    /// Exact PCA: covariance d × d (XᵀX by cblas_ssyrk, minus n μμᵀ), then its top k
    /// eigenpairs in double precision (dsyevr_; dsyevd_ for all of them when k = d). Each component's sign
    /// is fixed so that its largest-magnitude entry is positive (scikit-learn's
    /// svd_flip with u_based_decision=False), so runs are reproducible.
    public static func fit(_ x: [Float], rows n: Int, dim d: Int, components k: Int) throws -> PCAResult {
        precondition(x.count == n * d)
        guard n >= 2 else { throw IdxError("PCA needs at least 2 rows, got \(n)") }
        guard k >= 1, k <= d else { throw IdxError("PCA: \(k) components asked of \(d)-dimensional data") }

        // No centred copy (two fewer passes over X): mean by sgemv, C = XᵀX by ssyrk, then
        // cov = (C - n μμᵀ) / (n - 1) in double.
        var mean = [Float](repeating: 0, count: d)
        let ones = [Float](repeating: 1, count: n)
        var cov = [Float](repeating: 0, count: d * d)
        x.withUnsafeBufferPointer { xp in
            cblas_sgemv(CblasRowMajor, CblasTrans, Int32(n), Int32(d), 1 / Float(n), xp.baseAddress, Int32(d),
                        ones, 1, 0, &mean, 1)
            cov.withUnsafeMutableBufferPointer { cv in
                cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(d), Int32(n), 1,
                            xp.baseAddress, Int32(d), 0, cv.baseAddress, Int32(d))
            }
        }
        // Full symmetric double matrix (so row/column-major does not matter).
        var a = [Double](repeating: 0, count: d * d)
        let scale = 1 / Double(n - 1)
        for r in 0 ..< d {
            for c in r ..< d {
                let v = (Double(cov[r * d + c]) - Double(n) * Double(mean[r]) * Double(mean[c])) * scale
                a[r * d + c] = v
                a[c * d + r] = v
            }
        }
        var total = 0.0
        for c in 0 ..< d { total += a[c * d + c] }

        // The top k eigenpairs only (dsyevr, RRR), or all of them (dsyevd) when dsyevr is missing.
        var components = [Float](repeating: 0, count: k * d)
        var variance = [Double](repeating: 0, count: k)
        let (values, vectors, m) = try topEigen(&a, d, k)
        // Eigenvalues ascend: component c is eigenvector m-1-c, column (m-1-c) of `vectors` (column-major).
        for c in 0 ..< k {
            let col = m - 1 - c
            variance[c] = max(values[col], 0)
            var bigIndex = 0
            var big = 0.0
            for r in 0 ..< d where abs(vectors[col * d + r]) > big { big = abs(vectors[col * d + r]); bigIndex = r }
            let sign: Double = vectors[col * d + bigIndex] < 0 ? -1 : 1
            for r in 0 ..< d { components[c * d + r] = Float(sign * vectors[col * d + r]) }
        }
        let ratio = variance.map { total > 0 ? $0 / total : 0 }

        // Coordinates: X (n × d) · componentsᵀ (d × k), minus μ · componentsᵀ.
        var coords = [Float](repeating: 0, count: n * k)
        x.withUnsafeBufferPointer { xp in
            components.withUnsafeBufferPointer { vp in
                coords.withUnsafeMutableBufferPointer { op in
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(k), Int32(d), 1,
                                xp.baseAddress, Int32(d), vp.baseAddress, Int32(d), 0, op.baseAddress, Int32(k))
                }
            }
        }
        var shift = [Float](repeating: 0, count: k)
        for c in 0 ..< k { var t = 0.0; for r in 0 ..< d { t += Double(mean[r]) * Double(components[c * d + r]) }; shift[c] = Float(t) }
        coords.withUnsafeMutableBufferPointer { op in
            for i in 0 ..< n { for c in 0 ..< k { op[i * k + c] -= shift[c] } }
        }
        return PCAResult(components: components, explainedVariance: variance,
                         explainedVarianceRatio: ratio, mean: mean, coordinates: coords, k: k)
    }

    private typealias DSYEVR = @convention(c) (
        UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafePointer<Int32>, UnsafeMutablePointer<Double>,
        UnsafePointer<Int32>, UnsafePointer<Double>, UnsafePointer<Double>, UnsafePointer<Int32>, UnsafePointer<Int32>,
        UnsafePointer<Double>, UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Double>, UnsafeMutablePointer<Double>,
        UnsafePointer<Int32>, UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Double>, UnsafePointer<Int32>,
        UnsafeMutablePointer<Int32>, UnsafePointer<Int32>, UnsafeMutablePointer<Int32>) -> Void
    /// LAPACK's dsyevr_ from the loaded OpenBLAS (not in the COpenBLAS shim's prototypes).
    private static let dsyevr: DSYEVR? = dlsym(nil, "dsyevr_").map { unsafeBitCast($0, to: DSYEVR.self) }

    /// The k largest eigenpairs of the symmetric d × d matrix `a` (destroyed): eigenvalues
    /// ascending and eigenvectors as columns (column-major, d × m), m = the count returned.
    /// dsyevr computes only the wanted k (it is ~10x cheaper than all d at d = 128);
    /// without it, dsyevd computes all d and the caller takes the last k.
    static func topEigen(_ a: inout [Double], _ d: Int, _ k: Int) throws -> ([Double], [Double], Int) {
        guard let dsyevr, k < d else {
            var w = [Double](repeating: 0, count: d)
            try symmetricEigen(&a, &w, d)
            return (w, a, d)
        }
        var jobz = CChar(UInt8(ascii: "V")), range = CChar(UInt8(ascii: "I")), uplo = CChar(UInt8(ascii: "L"))
        var n = Int32(d), lda = Int32(d), il = Int32(d - k + 1), iu = Int32(d), ldz = Int32(d)
        var vl = 0.0, vu = 0.0, abstol = 0.0, found: Int32 = 0, info: Int32 = 0
        var w = [Double](repeating: 0, count: d), z = [Double](repeating: 0, count: d * k)
        var support = [Int32](repeating: 0, count: 2 * k)
        var lwork: Int32 = -1, liwork: Int32 = -1, wq = 0.0, iq: Int32 = 0
        dsyevr(&jobz, &range, &uplo, &n, &a, &lda, &vl, &vu, &il, &iu, &abstol, &found, &w, &z, &ldz, &support,
               &wq, &lwork, &iq, &liwork, &info)
        guard info == 0 else { throw IdxError("PCA: LAPACK dsyevr workspace query failed (info \(info))") }
        lwork = Int32(wq); liwork = iq
        var work = [Double](repeating: 0, count: Int(lwork)), iwork = [Int32](repeating: 0, count: Int(liwork))
        dsyevr(&jobz, &range, &uplo, &n, &a, &lda, &vl, &vu, &il, &iu, &abstol, &found, &w, &z, &ldz, &support,
               &work, &lwork, &iwork, &liwork, &info)
        guard info == 0, Int(found) == k else { throw IdxError("PCA: LAPACK dsyevr failed (info \(info), \(found) of \(k) eigenpairs)") }
        return (Array(w.prefix(k)), z, k)
    }

    /// Eigenvalues (ascending, into `w`) and eigenvectors (columns of `a`, column-major) of a symmetric d × d matrix.
    static func symmetricEigen(_ a: inout [Double], _ w: inout [Double], _ d: Int) throws {
        var jobz = Int8(UInt8(ascii: "V")), uplo = Int8(UInt8(ascii: "L"))
        var nn = Int32(d), lda = Int32(d), info: Int32 = 0
        var lwork: Int32 = -1, liwork: Int32 = -1
        var wq = [Double](repeating: 0, count: 1)
        var iq = [Int32](repeating: 0, count: 1)
        dsyevd_(&jobz, &uplo, &nn, &a, &lda, &w, &wq, &lwork, &iq, &liwork, &info)
        guard info == 0 else { throw IdxError("PCA: LAPACK dsyevd workspace query failed (info \(info))") }
        lwork = Int32(wq[0]); liwork = iq[0]
        var work = [Double](repeating: 0, count: Int(lwork))
        var iwork = [Int32](repeating: 0, count: Int(liwork))
        dsyevd_(&jobz, &uplo, &nn, &a, &lda, &w, &work, &lwork, &iwork, &liwork, &info)
        guard info == 0 else { throw IdxError("PCA: LAPACK dsyevd did not converge (info \(info))") }
    }
}
