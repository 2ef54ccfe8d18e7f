import Foundation
import IdxCorpus

/// Row-level reads that serve a document at a time (idx serve's documents, neighbours and
/// map), beside the whole-index reads of VectorIndexReader.
extension VectorIndexReader {
    /// The folder of the generation this reader opened (`indexes/<name>/gen-NNNNNN`).
    public var generationDirectory: String { directory + "/" + generation }

    /// The decoded unit vector of document `i` (what the scan scores), in the index's space.
    public func decodedVector(_ i: Int) -> [Float] {
        let (s, r) = locate(i)
        var out = [Float](repeating: 0, count: dimension)
        out.withUnsafeMutableBufferPointer { segments[s].decode(r, into: $0.baseAddress!) }
        return out
    }

    /// The decoded unit vectors of documents `ids` (ascending), one after another into `out`:
    /// each segment's run of them decoded in one call.
    public func decode(ascending ids: [Int], into out: UnsafeMutablePointer<Float>) {
        var rows = [UInt32](repeating: 0, count: ids.count), first = 0
        rows.withUnsafeMutableBufferPointer { rows in
            while first < ids.count {
                let (k, _) = locate(ids[first])
                let start = segmentStarts[k], end = start + segments[k].count
                var next = first
                while next < ids.count && ids[next] < end {
                    precondition(ids[next] >= start, "decode(ascending:) takes ascending document indices")
                    rows[next] = UInt32(ids[next] - start)
                    next += 1
                }
                segments[k].decode(rows: rows.baseAddress! + first, count: next - first, into: out + first * dimension)
                first = next
            }
        }
    }

    /// Each document's primary genre (the first of its list: a film ingest merged from several
    /// genre files is "Animation, Adventure", and colours a map as Animation), as positions in
    /// the list of primary genres (in order of first appearance over the segments): read from
    /// the segments' genre sections, without decoding any metadata. A map legend of the lists
    /// themselves would show every combination of genres and cover the map.
    public func primaryGenreTable() -> (names: [String], genreOfDocument: [UInt16]) {
        var names: [String] = []
        var position: [String: UInt16] = [:]
        var out = [UInt16](repeating: 0, count: count)
        for (k, s) in segments.enumerated() {
            let local = s.genreNames.map { list -> UInt16 in
                let name = Genres.names(list).first ?? list
                if let p = position[name] { return p }
                let p = UInt16(names.count)
                names.append(name)
                position[name] = p
                return p
            }
            let start = segmentStarts[k]
            for r in 0 ..< s.count { out[start + r] = local[Int(s.genreIds[r])] }
        }
        return (names, out)
    }

    /// Every single genre some document of the index holds (what `--genre` can filter by), sorted.
    public func genreNames() -> [String] {
        Array(Set(segments.flatMap(\.genreNames).flatMap(Genres.names))).sorted()
    }

    /// The stored id of every document, in index order (decodes, and so verifies, every
    /// metadata chunk).
    public func documentIds() throws -> [Int64] {
        var ids: [Int64] = []
        ids.reserveCapacity(count)
        for i in 0 ..< count { ids.append(try documentId(i)) }
        return ids
    }
}
