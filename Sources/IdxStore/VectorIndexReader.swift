import Foundation
import IdxBase
import IdxCorpus
import IdxLexical

/// The published generation of `indexes/<name>/`, opened read-only.
public struct VectorIndexReader {
    public let directory: String
    public let generation: String
    public let manifest: IndexManifest
    /// The model folder the index was built with ("" for raw vectors), resolved from the
    /// manifest's path relative to this folder (`ModelPath`).
    public var modelDirectory: String { ModelPath.resolve(manifest.modelDirectory, index: directory) }
    public let segments: [SegmentReader]
    /// Global index of each segment's first row, plus the total at the end.
    public let segmentStarts: [Int]
    /// BM25 over the segments' lexical halves; nil unless every live segment has one.
    public let lexical: BM25Scorer?

    /// Opens the live generation and verifies everything: manifest, format
    /// version, every checksum (vectors and metadata), every posting list.
    public init(directory: String) throws {
        try self.init(directory: directory, verification: .atOpen)
    }

    /// `.onFirstRead` (search): vectors, scales, genre ids and the lexical tables are verified
    /// now; each metadata chunk when it is first read, each term's postings when a query first
    /// reads the term.
    public init(directory: String, verification: Verification) throws {
        self.directory = directory
        let (generation, manifest) = try IndexLayout.readCurrent(directory)
        self.generation = generation
        self.manifest = manifest
        var segments: [SegmentReader] = []
        var starts = [0]
        for entry in manifest.segments {
            let path = directory + "/" + entry.file
            guard FileManager.default.fileExists(atPath: path) else {
                throw IdxError("\(path): segment listed in \(generation)/manifest.json is missing; the index is damaged: rebuild it with idx index.")
            }
            let s = try SegmentReader(path: path)
            guard s.count == entry.count, s.dimension == manifest.dimension,
                  XXHash64.hex(s.headerHash) == entry.headerHash else {
                throw IdxError("\(path): does not match its manifest entry (count, dimension or header hash); the segment was replaced or damaged: rebuild the index with idx index.")
            }
            if verification == .atOpen { try s.verifyMetadata() }
            segments.append(s)
            starts.append(starts.last! + s.count)
        }
        self.segments = segments
        segmentStarts = starts
        lexical = try Self.openLexical(directory: directory, manifest: manifest, verification: verification)
    }

    static func openLexical(directory: String, manifest: IndexManifest, verification: Verification) throws -> BM25Scorer? {
        guard manifest.lexicalWeight != nil, !manifest.segments.isEmpty,
              manifest.segments.allSatisfy({ $0.lexical != nil }) else { return nil }
        var readers: [LexicalSegmentReader] = []
        for entry in manifest.segments {
            let l = entry.lexical!, path = directory + "/" + l.file
            guard FileManager.default.fileExists(atPath: path) else {
                throw IdxError("\(path): lexical segment listed in the manifest is missing; the index is damaged: rebuild it with idx index.")
            }
            let r = try LexicalSegmentReader(path: path, verification: verification)
            guard r.documentCount == entry.count, r.termCount == l.terms else {
                throw IdxError("\(path): holds \(r.documentCount) documents and \(r.termCount) terms, its manifest entry \(entry.count) and \(l.terms); the segment was replaced or damaged: rebuild the index with idx index.")
            }
            readers.append(r)
        }
        return BM25Scorer(segments: readers)
    }

    public var count: Int { segmentStarts.last! }
    public var dimension: Int { manifest.dimension }
    public var modelHash: String { manifest.modelHash }
    public var tokenizerHash: String { manifest.tokenizerHash }

    /// (segment, row) of global index `i`.
    public func locate(_ i: Int) -> (Int, Int) {
        precondition(i >= 0 && i < count, "document \(i) out of range 0..<\(count)")
        var lo = 0, hi = segments.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if segmentStarts[mid] <= i { lo = mid } else { hi = mid - 1 }
        }
        return (lo, i - segmentStarts[lo])
    }

    /// Title, year, genre, rating, description… of document `i`. With a reader
    /// opened with `.onFirstRead`, a corrupted chunk traps: use `documentMetadata`.
    public func metadata(_ i: Int) -> DocumentMetadata {
        do { return try documentMetadata(i) } catch { fatalError("\(error)") }
    }

    /// The metadata of document `i`, its chunk verified on first read.
    public func documentMetadata(_ i: Int) throws -> DocumentMetadata {
        let (s, r) = locate(i)
        return try segments[s].metadata(r).metadata
    }

    /// The id stored with document `i` (its position in the corpus it came from).
    public func documentId(_ i: Int) throws -> Int64 { try document(i).id }

    /// Document `i`'s id and metadata, from one read of its record.
    public func document(_ i: Int) throws -> (id: Int64, metadata: DocumentMetadata) {
        let (s, r) = locate(i)
        return try segments[s].metadata(r)
    }

    /// count × dimension floats: the decoded unit vectors, in index order.
    public func dequantizedVectors() -> [Float] {
        let d = dimension
        return [Float](unsafeUninitializedCapacity: count * d) { o, initialized in
            if let p = o.baseAddress { decode(ascending: Array(0 ..< count), into: p) }
            initialized = count * d
        }
    }

    /// A raw query embedding mapped into the index's space: the index's
    /// standardisation (if any), then unit length.
    public func prepareQuery(_ embedding: [Float]) -> [Float] {
        var q = embedding
        VectorIndexWriter.prepare(&q, dimension: dimension, standardization: manifest.standardization)
        return q
    }

    /// Refuses a model or tokenizer other than the one the index was built with.
    public func checkModel(modelHash: String, tokenizerHash: String, modelDirectory: String) throws {
        if modelHash != manifest.modelHash {
            throw IdxError("\(modelDirectory)/model.safetensors: model hash \(modelHash) does not match the index \(directory) (built with \(manifest.modelHash)); search with the model the index was built with, or rebuild the index with idx index --model \(modelDirectory).")
        }
        if tokenizerHash != manifest.tokenizerHash {
            throw IdxError("\(modelDirectory)/tokenizer.json: tokenizer hash \(tokenizerHash) does not match the index \(directory) (built with \(manifest.tokenizerHash)); rebuild the index with idx index --model \(modelDirectory).")
        }
    }
}
