import Foundation
import IdxBase

/// What a search may return: documents of a genre, never one given document.
public struct SearchFilter: Equatable, Sendable {
    /// Only documents of this genre (case-insensitive); nil: all.
    public var genre: String?
    /// A document no answer holds: the query's own, when indexed documents are the queries
    /// (idx eval's leave-one-out).
    public var excluding: Int?
    public init(genre: String? = nil, excluding: Int? = nil) { self.genre = genre; self.excluding = excluding }
}

/// The small interface idx searches vectors through (FAISS's `Index`): unit query rows in,
/// each row's k best documents by inner product out. `VectorSearcher` (the int8 index of an
/// index folder) is the one kept behind it. `idx search --query-vectors` searches through it,
/// and relevance feedback reads the vectors it moves toward through `reconstruct`; the hybrid
/// passes (SearchEngine) use VectorSearcher's scan with BM25 scores blended in, which this
/// interface leaves out.
public protocol VectorIndex {
    var count: Int { get }
    var dimension: Int { get }
    /// The `k` best documents passing `filter` for each row of `queries` (row-major,
    /// `dimension` floats a row, unit length: VectorIndexReader.prepareQuery), best first,
    /// ties by lower index. A batch runs its queries in parallel.
    func search(_ queries: [Float], k: Int, filter: SearchFilter) throws -> [[SearchHit]]
    /// Document `i`'s stored vector (FAISS's `reconstruct`), as the search scores it.
    func reconstruct(_ i: Int, into row: UnsafeMutablePointer<Float>)
}

extension VectorSearcher: VectorIndex {
    public var count: Int { reader.count }
    public var dimension: Int { reader.dimension }

    public func search(_ queries: [Float], k: Int, filter: SearchFilter) throws -> [[SearchHit]] {
        let d = dimension
        precondition(queries.count % d == 0, "queries hold \(queries.count) floats, not rows of \(d)")
        let n = queries.count / d
        let rows = (0 ..< n).map { Array(queries[$0 * d ..< ($0 + 1) * d]) }
        let filters = Array(repeating: filter, count: n)
        // One query: its scan takes every core. A batch: one part a core, each scanned once for
        // all its queries (the answers do not depend on the thread count or the parts: TopK keeps
        // the same set whatever the order of its pushes, and a query's arithmetic is its own).
        guard n > 1 else {
            return try scanAndRerank(rows, k: [k], filters: filters, threads: 0, rerank: [nil], lexical: [nil])
        }
        let parts = Self.batchParts(n)
        return try ParallelMap.map(parts.count) { p in
            let part = parts[p]
            return try scanAndRerank(Array(rows[part]), k: Array(repeating: k, count: part.count), filters: Array(filters[part]),
                                     threads: 1, rerank: Array(repeating: nil, count: part.count),
                                     lexical: Array(repeating: nil, count: part.count))
        }.flatMap { $0 }
    }

    public func reconstruct(_ i: Int, into row: UnsafeMutablePointer<Float>) {
        let (s, r) = reader.locate(i)
        reader.segments[s].decode(r, into: row)
    }
}
