/// L2 normalisation of vectors: the one copy, used for what the index stores, for queries and
/// for projected texts, so that they all live on the same sphere.
public enum UnitVectors {
    /// Scales `row` (d floats) to unit length; a zero row stays zero.
    @inline(__always) public static func normalize(_ row: UnsafeMutablePointer<Float>, dimension d: Int) {
        var norm2: Float = 0
        for j in 0 ..< d { norm2 += row[j] * row[j] }
        let inv = norm2 > 0 ? 1 / norm2.squareRoot() : 0
        for j in 0 ..< d { row[j] *= inv }
    }

    /// Scales each row of `x` (n × d, row-major) to unit length.
    public static func normalizeRows(_ x: inout [Float], dimension d: Int) {
        x.withUnsafeMutableBufferPointer { v in
            for i in 0 ..< v.count / d { normalize(v.baseAddress! + i * d, dimension: d) }
        }
    }
}
