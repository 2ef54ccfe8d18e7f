import Foundation
import IdxBase
import IdxCorpus
import IdxLexical

/// What the vectors came from; recorded in the manifest and checked at search time.
public struct IndexProvenance: Sendable {
    public var modelHash: String
    public var tokenizerHash: String
    public var modelDirectory: String
    public var maxTokens: Int
    public var source: String
    public init(modelHash: String, tokenizerHash: String, modelDirectory: String, maxTokens: Int, source: String) {
        self.modelHash = modelHash; self.tokenizerHash = tokenizerHash
        self.modelDirectory = modelDirectory; self.maxTokens = maxTokens; self.source = source
    }
}

/// Builds generations of an index folder:
///
///     indexes/<name>/CURRENT                  "gen-000003"  (replaced by rename)
///     indexes/<name>/gen-000003/manifest.json lists the live segments
///     indexes/<name>/segments/seg-….idxseg    immutable, shared between generations
///
/// Segments are written here; a generation is begun and published by `IndexCommit`, the
/// one commit path of an index folder.
public enum VectorIndexWriter {
    /// The BM25 share a new index records when none is given (`HybridScoring` reads it back at
    /// search time). Chosen on IMDB-Genres typed queries with reciprocal-rank fusion
    /// (docs/search-quality.md): for the default model an even share ranked best, 0.4 and 0.6
    /// below it, and genre kNN@10 kept its level.
    public static let defaultLexicalWeight: Float = 0.5

    /// Applies `--standardize` statistics (if any) and L2-normalises each row in place.
    public static func prepare(_ vectors: inout [Float], dimension d: Int, standardization: IndexManifest.Standardization?) {
        let n = vectors.count / d
        vectors.withUnsafeMutableBufferPointer { v in
            for i in 0 ..< n {
                let row = v.baseAddress! + i * d
                if let s = standardization {
                    for j in 0 ..< d { row[j] = (row[j] - s.mean[j]) / s.std[j] }
                }
                UnitVectors.normalize(row, dimension: d)
            }
        }
    }

    /// Per-dimension mean and standard deviation (std floored so constant dimensions stay finite).
    public static func statistics(_ vectors: [Float], dimension d: Int) -> IndexManifest.Standardization {
        var sums = partialSums(vectors, dimension: d)
        return statistics(sums: &sums, dimension: d)
    }

    /// Σx and Σx² per dimension, then the row count: 2d + 1 doubles (summable across ranks).
    public static func partialSums(_ vectors: [Float], dimension d: Int) -> [Double] {
        var out = [Double](repeating: 0, count: 2 * d + 1)
        for i in 0 ..< vectors.count / d {
            for j in 0 ..< d { let x = Double(vectors[i * d + j]); out[j] += x; out[d + j] += x * x }
        }
        out[2 * d] = Double(vectors.count / d)
        return out
    }

    /// The statistics from `partialSums` (summed over all parts).
    public static func statistics(sums: inout [Double], dimension d: Int) -> IndexManifest.Standardization {
        let n = max(1, sums[2 * d])
        var m = [Float](repeating: 0, count: d), s = [Float](repeating: 1, count: d)
        for j in 0 ..< d {
            let mu = sums[j] / n
            let variance = max(0, sums[d + j] / n - mu * mu)
            m[j] = Float(mu)
            s[j] = Float(max(variance.squareRoot(), 1e-6))
        }
        return .init(mean: m, std: s)
    }

    public struct Result {
        public var generation: String
        public var manifest: IndexManifest
        public var segmentPath: String
        public var segmentBytes: Int
        public var vectorBytes: Int
    }

    /// Writes `embeddings` (count × dimension, raw model output) as a new segment
    /// and publishes a generation holding it, plus the current segments when `append`.
    public static func write(directory dir: String, embeddings: [Float], dimension d: Int,
                             metadata: [DocumentMetadata], ids: [Int64]? = nil,
                             provenance: IndexProvenance, append: Bool, standardize: Bool,
                             lexicalWeight: Float? = defaultLexicalWeight) throws -> Result {
        precondition(embeddings.count == metadata.count * d, "embeddings do not match the metadata count")
        let commit = try IndexCommit.begin(directory: dir, dimension: d, provenance: provenance, append: append,
                                           lexicalWeight: lexicalWeight)
        let plan = commit.plan
        var standardization = plan.inherited
        if !append && standardize { standardization = statistics(embeddings, dimension: d) }
        let segment = try writeSegment(directory: dir, generation: plan.generation, embeddings: embeddings, dimension: d,
                                       metadata: metadata, ids: ids ?? (0 ..< metadata.count).map { Int64($0) },
                                       standardization: standardization, source: provenance.source,
                                       lexical: plan.lexicalWeight != nil)
        let manifest = try commit.commit(segments: [segment.entry], dimension: d, provenance: provenance,
                                         standardization: standardization)
        return Result(generation: IndexLayout.generationName(manifest.generation), manifest: manifest,
                      segmentPath: dir + "/" + segment.entry.file, segmentBytes: segment.entry.bytes,
                      vectorBytes: segment.vectorBytes)
    }

    /// What a new generation builds on: its number, the live manifest, the standardisation
    /// an append inherits. Checks `--append`'s preconditions.
    public struct Plan: Codable {
        public var generation: Int
        public var previous: IndexManifest?
        public var append: Bool
        public var inherited: IndexManifest.Standardization?
        /// The BM25 share of hybrid scoring (an append keeps the index's); nil: no lexical half.
        public var lexicalWeight: Float?
    }

    /// `lexicalWeight`: the new index's BM25 share (ignored on append, which keeps the index's).
    public static func plan(directory dir: String, dimension d: Int, provenance: IndexProvenance, append: Bool,
                            lexicalWeight: Float? = defaultLexicalWeight) throws -> Plan {
        var previous: IndexManifest?
        if FileManager.default.fileExists(atPath: IndexLayout.currentFile(dir)) {
            previous = try IndexLayout.readCurrent(dir).manifest
        } else if append {
            throw IdxError("\(dir): --append needs an existing index, and there is none; run idx index without --append first.")
        }
        var inherited: IndexManifest.Standardization?
        if append, let p = previous {
            guard p.dimension == d else {
                throw IdxError("\(dir): the index holds \(p.dimension)-dimensional vectors, the new ones are \(d)-dimensional; build a separate index (--out) instead of --append.")
            }
            guard p.modelHash == provenance.modelHash, p.tokenizerHash == provenance.tokenizerHash else {
                throw IdxError("\(dir): the index was built with model \(p.modelHash) / tokenizer \(p.tokenizerHash), not \(provenance.modelHash) / \(provenance.tokenizerHash); --append needs the same model: rebuild without --append.")
            }
            guard p.maxTokens == provenance.maxTokens else {
                throw IdxError("\(dir): the index embedded documents cut to \(p.maxTokens) tokens, the new segment to \(provenance.maxTokens); pass --max-tokens \(p.maxTokens) to append, or rebuild without --append.")
            }
            inherited = p.standardization // appended vectors must live in the same space
        }
        return Plan(generation: (previous?.generation ?? 0) + 1, previous: previous, append: append, inherited: inherited,
                    lexicalWeight: append ? previous?.lexicalWeight : lexicalWeight)
    }

    /// Normalises (after `standardization`), quantizes and writes one immutable segment
    /// (temp + fsync + rename), reads it back, and returns its manifest entry. Nothing is
    /// published: an unreferenced segment is removed by the next successful commit (unless its
    /// generation is still in progress).
    public static func writeSegment(directory dir: String, generation: Int, embeddings: [Float], dimension d: Int,
                                    metadata: [DocumentMetadata], ids: [Int64],
                                    standardization: IndexManifest.Standardization?,
                                    source: String, lexical: Bool) throws -> (entry: IndexManifest.SegmentEntry, vectorBytes: Int) {
        let count = metadata.count
        precondition(embeddings.count == count * d && ids.count == count)
        var unit = embeddings
        prepare(&unit, dimension: d, standardization: standardization)
        let bytes = SegmentWriter.encode(unitVectors: unit, count: count, dimension: d, metadata: metadata, ids: ids)
        let segmentName = "segments/seg-\(String(format: "%06d", generation))-\(XXHash64.hex(XXHash64.hash(bytes)).prefix(8)).idxseg"
        let segmentPath = dir + "/" + segmentName
        try AtomicFile.write(Data(bytes), to: segmentPath)
        let opened = try SegmentReader(path: segmentPath) // read back: never publish what cannot be read
        var entry = IndexManifest.SegmentEntry(file: segmentName, count: count, bytes: bytes.count,
                                               headerHash: XXHash64.hex(opened.headerHash), source: source)
        // The BM25 half of hybrid search, beside it; every live segment needs one for it to be used.
        if lexical { entry.lexical = try LexicalSegmentBuilder.write(metadata, directory: dir, besideSegment: segmentName) }
        return (entry, opened.vectorBytesOnDisk)
    }

    /// The generation number a segment file name carries (`seg-000003-….idxseg` or `.idxlex`).
    static func segmentGeneration(_ name: String) -> Int? {
        let parts = name.split(separator: "-")
        guard parts.count >= 3, parts[0] == "seg" else { return nil }
        return Int(parts[1])
    }
}
