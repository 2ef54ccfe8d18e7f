import Foundation
import IdxBase
import IdxModel

public enum ProjectionInput {
    /// Reads a raw little-endian float32 matrix (rows × dim, row-major, no header).
    public static func readVectors(path: String, dim: Int) throws -> (data: [Float], rows: Int) {
        guard dim > 0 else { throw IdxError("--dim must be positive, got \(dim)") }
        guard let bytes = FileManager.default.contents(atPath: path) else {
            throw IdxError("cannot read vector file \(path): check the path")
        }
        guard bytes.count % (4 * dim) == 0 else {
            throw IdxError("\(path): \(bytes.count) bytes is not a whole number of \(dim)-dimensional float32 rows (\(4 * dim) bytes each); check --dim")
        }
        let rows = bytes.count / (4 * dim)
        var data = [Float](repeating: 0, count: rows * dim)
        _ = data.withUnsafeMutableBytes { dst in bytes.copyBytes(to: dst.bindMemory(to: UInt8.self)) }
        for (i, v) in data.enumerated() where !v.isFinite {
            throw IdxError("\(path): row \(i / dim), column \(i % dim) is not a finite number")
        }
        return (data, rows)
    }

    /// Indices of the rows to project: those whose genre is in `genres` (all when empty), then
    /// `sample` of them drawn without replacement from the seed, kept in their original order.
    public static func select(genres: [String], only wanted: [String], sample: Int?, seed: UInt64) throws -> [Int] {
        var rows = Array(0 ..< genres.count)
        if !wanted.isEmpty {
            let known = Set(genres)
            let unknown = wanted.filter { !known.contains($0) }
            if !unknown.isEmpty {
                throw IdxError("unknown genre \(unknown.map { "\"\($0)\"" }.joined(separator: ", ")); known genres: \(known.sorted().joined(separator: ", "))")
            }
            let set = Set(wanted)
            rows = rows.filter { set.contains(genres[$0]) }
        }
        if let sample {
            guard sample > 0 else { throw IdxError("--sample must be positive, got \(sample)") }
            guard sample <= rows.count else {
                throw IdxError("--sample \(sample) is more than the \(rows.count) rows selected; give at most \(rows.count) (or leave --sample out for all).")
            }
            if sample < rows.count {
                var rng = SplitMix64(state: seed)
                // Partial Fisher-Yates: the first `sample` slots are a uniform draw.
                for i in 0 ..< sample {
                    let j = i + Int(rng.next() % UInt64(rows.count - i))
                    rows.swapAt(i, j)
                }
                rows = Array(rows[0 ..< sample]).sorted()
            }
        }
        if rows.isEmpty { throw IdxError("the selection is empty: no rows match the --genre/--sample options") }
        return rows
    }

    /// Gathers the selected rows of x (n × d) into a new matrix.
    public static func gather(_ x: [Float], dim d: Int, rows: [Int]) -> [Float] {
        var out = [Float](repeating: 0, count: rows.count * d)
        for (r, i) in rows.enumerated() { for c in 0 ..< d { out[r * d + c] = x[i * d + c] } }
        return out
    }
}
