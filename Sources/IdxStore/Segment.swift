import COpenBLAS
import CSupport
import Foundation
import IdxBase
import IdxCorpus

/// One append-only segment file (`segments/seg-*.idxseg`): int8 residual codes
/// of unit vectors (zstd chunks), per-vector scale and norm, genre ids, and
/// zstd-compressed metadata chunks, each part with its own XXH64. Layout: docs/store.md.
public enum SegmentFormat {
    public static let magic: [UInt8] = Array("IDXSEG\0\0".utf8)
    /// Bumped whenever a reader of the previous version could misread a new file.
    public static let version: UInt32 = 1
    public static let vectorsPerChunk = 8192
    public static let metadataPerChunk = 128

    public enum Section: UInt32, CaseIterable {
        case centroids = 1, scales, norms, genreIds, genreNames, vectorChunkTable, metadataChunkTable, vectorData, metadataData, centroidIds
    }
}

/// Per-segment int8 residual quantization. Vectors are unit vectors but
/// embeddings are anisotropic and clustered: they share a large common
/// component and a genre-like cluster component. Each vector is coded as its
/// nearest of up to 256 k-means `centroids` (one byte) plus an int8 residual
/// scaled by its own max |x| / 127, so the int8 steps only have to resolve what
/// separates a document from its neighbours.
/// Decoded vector: v̂ = centroid[c] + scale · code; `norm` stores 1 / |v̂| so scores are cosines.
struct QuantizedVectors {
    var dimension: Int
    var count: Int
    var centroids: [Float]     // centroidCount × dimension
    var centroidIds: [UInt8]   // count
    var scales: [Float]
    var norms: [Float]
    var codes: [Int8]

    static let maxCentroids = 256

    init(unitVectors v: [Float], count: Int, dimension d: Int) {
        precondition(v.count == count * d)
        dimension = d; self.count = count
        let k = max(1, min(Self.maxCentroids, count / 64)) // centroid table ≤ 16 bytes per vector (d=256 max)
        (centroids, centroidIds) = v.withUnsafeBufferPointer { KMeans.fit($0.baseAddress!, count: count, dimension: d, clusters: k) }
        scales = [Float](repeating: 0, count: count)
        norms = [Float](repeating: 0, count: count)
        codes = [Int8](repeating: 0, count: count * d)
        var residual = [Float](repeating: 0, count: d)
        for i in 0 ..< count {
            let c = Int(centroidIds[i]) * d
            var maxAbs: Float = 0
            for j in 0 ..< d {
                residual[j] = v[i * d + j] - centroids[c + j]
                maxAbs = max(maxAbs, abs(residual[j]))
            }
            let scale = maxAbs > 0 ? maxAbs / 127 : 1
            var norm2: Float = 0
            for j in 0 ..< d {
                let q = max(-127, min(127, (residual[j] / scale).rounded()))
                codes[i * d + j] = Int8(q)
                let decoded = centroids[c + j] + scale * q
                norm2 += decoded * decoded
            }
            scales[i] = scale
            norms[i] = norm2 > 0 ? 1 / norm2.squareRoot() : 0
        }
    }
}

/// Lloyd's k-means on a sample (at most 16384 rows, 10 iterations), then one
/// assignment pass over all rows; distances through sgemm.
enum KMeans {
    static func fit(_ x: UnsafePointer<Float>, count n: Int, dimension d: Int, clusters k: Int) -> ([Float], [UInt8]) {
        if n == 0 { return ([Float](repeating: 0, count: d), []) }
        let sampleCount = min(n, 16384)
        let stride = max(1, n / sampleCount)
        var sample = [Float](repeating: 0, count: sampleCount * d)
        for s in 0 ..< sampleCount { for j in 0 ..< d { sample[s * d + j] = x[s * stride * d + j] } }
        // Initial centroids: evenly spaced sample rows.
        var c = [Float](repeating: 0, count: k * d)
        for i in 0 ..< k { let s = i * sampleCount / k; for j in 0 ..< d { c[i * d + j] = sample[s * d + j] } }
        var assignment = [UInt8](repeating: 0, count: sampleCount)
        for _ in 0 ..< 10 {
            sample.withUnsafeBufferPointer { assign($0.baseAddress!, count: sampleCount, dimension: d, centroids: c, clusters: k, into: &assignment, offset: 0) }
            var sums = [Double](repeating: 0, count: k * d), sizes = [Int](repeating: 0, count: k)
            for s in 0 ..< sampleCount {
                let a = Int(assignment[s]); sizes[a] += 1
                for j in 0 ..< d { sums[a * d + j] += Double(sample[s * d + j]) }
            }
            for i in 0 ..< k where sizes[i] > 0 {
                for j in 0 ..< d { c[i * d + j] = Float(sums[i * d + j] / Double(sizes[i])) }
            }
        }
        var ids = [UInt8](repeating: 0, count: n)
        let block = 8192
        var start = 0
        while start < n {
            let m = min(block, n - start)
            assign(x + start * d, count: m, dimension: d, centroids: c, clusters: k, into: &ids, offset: start)
            start += m
        }
        return (c, ids)
    }

    /// Nearest centroid: argmax over c of (x · c − |c|² / 2).
    static func assign(_ x: UnsafePointer<Float>, count m: Int, dimension d: Int, centroids c: [Float], clusters k: Int,
                       into out: inout [UInt8], offset: Int) {
        var half = [Float](repeating: 0, count: k)
        for i in 0 ..< k { var s: Float = 0; for j in 0 ..< d { s += c[i * d + j] * c[i * d + j] }; half[i] = s / 2 }
        var scores = [Float](repeating: 0, count: m * k)
        c.withUnsafeBufferPointer { cp in
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(k), Int32(d), 1, x, Int32(d),
                        cp.baseAddress, Int32(d), 0, &scores, Int32(k))
        }
        for r in 0 ..< m {
            var best = 0, bestScore = -Float.infinity
            for i in 0 ..< k {
                let s = scores[r * k + i] - half[i]
                if s > bestScore { bestScore = s; best = i }
            }
            out[offset + r] = UInt8(best)
        }
    }
}

/// Metadata record encoding inside a metadata chunk.
enum MetadataRecord {
    static func encode(_ m: DocumentMetadata, id: Int64, into w: inout ByteWriter) {
        w.i64(id)
        w.string(m.title)
        w.i64(m.year.map { Int64($0) } ?? Int64.min)
        w.string(m.genre)
        w.string(m.expandedGenres)
        w.f32(m.rating ?? .nan)
        w.string(m.description)
        w.string(m.sourceFile)
        w.i64(Int64(m.sourceRow))
    }

    static func decode(_ r: inout ByteReader) throws -> (id: Int64, metadata: DocumentMetadata) {
        let id = try r.i64()
        let title = try r.string()
        let year = try r.i64()
        let genre = try r.string()
        let expanded = try r.string()
        let rating = try r.f32()
        let description = try r.string()
        let sourceFile = try r.string()
        let sourceRow = try r.i64()
        return (id, DocumentMetadata(title: title, year: year == Int64.min ? nil : Int(year), genre: genre,
                                     expandedGenres: expanded, rating: rating.isNaN ? nil : rating,
                                     description: description, sourceFile: sourceFile, sourceRow: Int(sourceRow)))
    }
}

enum SegmentWriter {
    /// Encodes a segment of `count` unit vectors with their metadata and ids.
    static func encode(unitVectors: [Float], count: Int, dimension d: Int,
                       metadata: [DocumentMetadata], ids: [Int64]) -> [UInt8] {
        precondition(metadata.count == count && ids.count == count)
        let q = QuantizedVectors(unitVectors: unitVectors, count: count, dimension: d)

        // Genre dictionary (sorted, so equal inputs give equal files).
        let genreNames = Array(Set(metadata.map(\.genre))).sorted()
        precondition(genreNames.count <= Int(UInt16.max), "more than 65535 distinct genres")
        var genreIndex: [String: UInt16] = [:]
        for (i, g) in genreNames.enumerated() { genreIndex[g] = UInt16(i) }

        var sections: [(SegmentFormat.Section, [UInt8])] = []
        var w = ByteWriter(); w.floats(q.centroids); sections.append((.centroids, w.bytes))
        sections.append((.centroidIds, q.centroidIds))
        w = ByteWriter(); w.floats(q.scales); sections.append((.scales, w.bytes))
        w = ByteWriter(); w.floats(q.norms); sections.append((.norms, w.bytes))
        w = ByteWriter(); for m in metadata { w.u16(genreIndex[m.genre]!) }; sections.append((.genreIds, w.bytes))
        w = ByteWriter(); w.u32(UInt32(genreNames.count)); for g in genreNames { w.string(g) }
        sections.append((.genreNames, w.bytes))

        // Compressed chunks (offsets relative to the start of their data section).
        var vectorData: [UInt8] = []
        var vectorTable: [(UInt64, UInt64, UInt64, UInt64)] = []
        q.codes.withUnsafeBytes { all in
            var start = 0
            while start < count {
                let end = min(count, start + SegmentFormat.vectorsPerChunk)
                let raw = UnsafeRawBufferPointer(rebasing: all[start * d ..< end * d])
                // zstd is kept only where it pays: int8 residuals are close to
                // incompressible (~6%), and a raw chunk is scanned in place from the map.
                var c = Zstd.compress(raw, level: 3)
                if c.count * 10 > raw.count * 9 { c = Array(raw) }
                vectorTable.append((UInt64(vectorData.count), UInt64(c.count), UInt64(raw.count), XXHash64.hash(c)))
                vectorData.append(contentsOf: c)
                start = end
            }
        }
        var metadataData: [UInt8] = []
        var metadataTable: [(UInt64, UInt64, UInt64, UInt64)] = []
        var start = 0
        while start < count {
            let end = min(count, start + SegmentFormat.metadataPerChunk)
            // Chunk: u32 n, (n + 1) u32 record offsets, records.
            var records = ByteWriter()
            var offsets: [UInt32] = [0]
            for i in start ..< end {
                MetadataRecord.encode(metadata[i], id: ids[i], into: &records)
                offsets.append(UInt32(records.bytes.count))
            }
            var chunk = ByteWriter()
            chunk.u32(UInt32(end - start))
            for o in offsets { chunk.u32(o) }
            chunk.raw(records.bytes)
            let c = Zstd.compress(chunk.bytes, level: 6)
            metadataTable.append((UInt64(metadataData.count), UInt64(c.count), UInt64(chunk.bytes.count), XXHash64.hash(c)))
            metadataData.append(contentsOf: c)
            start = end
        }
        w = ByteWriter(); for e in vectorTable { w.u64(e.0); w.u64(e.1); w.u64(e.2); w.u64(e.3) }
        sections.append((.vectorChunkTable, w.bytes))
        w = ByteWriter(); for e in metadataTable { w.u64(e.0); w.u64(e.1); w.u64(e.2); w.u64(e.3) }
        sections.append((.metadataChunkTable, w.bytes))
        sections.append((.vectorData, vectorData))
        sections.append((.metadataData, metadataData))

        // Header, section table, header hash, then the sections (8-byte aligned).
        let headerSize = 40 + sections.count * 32 + 8
        var offsets: [Int] = []
        var position = headerSize
        for (_, bytes) in sections {
            position = (position + 7) & ~7
            offsets.append(position)
            position += bytes.count
        }
        var h = ByteWriter()
        h.raw(SegmentFormat.magic)
        h.u32(SegmentFormat.version)
        h.u32(UInt32(d))
        h.u64(UInt64(count))
        h.u32(UInt32(SegmentFormat.vectorsPerChunk))
        h.u32(UInt32(SegmentFormat.metadataPerChunk))
        h.u32(UInt32(sections.count))
        h.u32(0)
        for (i, (kind, bytes)) in sections.enumerated() {
            h.u32(kind.rawValue); h.u32(0)
            h.u64(UInt64(offsets[i])); h.u64(UInt64(bytes.count))
            // The data regions are covered chunk by chunk through the tables.
            h.u64(kind == .vectorData || kind == .metadataData ? 0 : XXHash64.hash(bytes))
        }
        h.u64(XXHash64.hash(h.bytes))
        precondition(h.bytes.count == headerSize)
        for (i, (_, bytes)) in sections.enumerated() {
            h.pad(to: 8)
            precondition(h.bytes.count == offsets[i])
            h.raw(bytes)
        }
        return h.bytes
    }
}

/// A segment opened for search: vectors decoded into memory, metadata left
/// compressed in the map and decoded a chunk at a time on demand.
public final class SegmentReader {
    struct Chunk { var offset: Int; var length: Int; var rawLength: Int; var hash: UInt64 }

    let path: String
    let file: MappedFile
    public let dimension: Int
    public let count: Int
    let headerHash: UInt64
    public let centroids: [Float]       // centroidCount × dimension
    public let centroidCount: Int
    /// `centroids` by dimension: dimension × `centroidLanes` (the count rounded up to 32, zeros
    /// after it), so that `centroidDots` reads 32 centroids' same coordinate at once.
    private let centroidsByDimension: [Float]
    private let centroidLanes: Int
    public let centroidIds: [UInt8]
    public let scales: [Float]
    public let norms: [Float]
    public let genreIds: [UInt16]
    public let genreNames: [String]
    /// count × dimension int8 codes.
    /// count × dimension int8 codes: the mapped file itself when every chunk is
    /// stored raw (and contiguous), else a decompressed copy owned here.
    public let codes: UnsafePointer<Int8>
    private let ownedCodes: UnsafeMutablePointer<Int8>?
    let vectorBytesOnDisk: Int
    private let metadataChunks: [Chunk]
    private let metadataBase: Int
    private let metadataPerChunk: Int
    /// Decompressed metadata chunks, bounded by `metadataCacheBytes`: a server's hits and a
    /// list's dedup and printing come back to the same chunks, and decompressing one costs
    /// far more than decoding the one record asked for.
    private var chunkCache: [Int: (bytes: [UInt8], lastUse: Int)] = [:]
    private var chunkCacheBytes = 0
    private var chunkCacheClock = 0
    private let lock = NSLock()
    /// The cache's bound (at least one chunk is kept).
    var metadataCacheBytes = 16 << 20

    /// q · centroid for every centroid (`q`: `dimension` floats): each summed over the dimensions
    /// in order, the bits a plain loop over one centroid gives, 32 centroids at a time (one
    /// centroid at a time, each addition waited on the one before).
    public func centroidDots(_ q: UnsafePointer<Float>) -> [Float] {
        let lanes = centroidLanes, d = dimension
        var out = [Float](repeating: 0, count: lanes)
        centroidsByDimension.withUnsafeBufferPointer { t in
            out.withUnsafeMutableBufferPointer { o in
                for c in stride(from: 0, to: lanes, by: 32) {
                    var acc = (SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>())
                    for j in 0 ..< d {
                        let x = SIMD8(repeating: q[j]), row = UnsafeRawPointer(t.baseAddress! + j * lanes + c)
                        acc.0 += x * row.loadUnaligned(as: SIMD8<Float>.self)
                        acc.1 += x * row.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
                        acc.2 += x * row.loadUnaligned(fromByteOffset: 64, as: SIMD8<Float>.self)
                        acc.3 += x * row.loadUnaligned(fromByteOffset: 96, as: SIMD8<Float>.self)
                    }
                    let dst = UnsafeMutableRawPointer(o.baseAddress! + c)
                    dst.storeBytes(of: acc.0, as: SIMD8<Float>.self)
                    dst.storeBytes(of: acc.1, toByteOffset: 32, as: SIMD8<Float>.self)
                    dst.storeBytes(of: acc.2, toByteOffset: 64, as: SIMD8<Float>.self)
                    dst.storeBytes(of: acc.3, toByteOffset: 96, as: SIMD8<Float>.self)
                }
            }
        }
        out.removeLast(lanes - centroidCount)
        return out
    }

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path)
        let all = file.bytes
        var r = ByteReader(all, source: path)
        let magic = try r.bytes(8)
        guard Array(magic) == SegmentFormat.magic else {
            throw IdxError("\(path): not an idx segment (bad magic bytes); the index is corrupted: rebuild it with idx index.")
        }
        let version = try r.u32()
        if version > SegmentFormat.version {
            throw IdxError("\(path): segment format version \(version) is newer than this idx understands (\(SegmentFormat.version)); upgrade idx or rebuild the index with this one.")
        }
        if version != SegmentFormat.version {
            throw IdxError("\(path): segment format version \(version) is not supported (this idx reads \(SegmentFormat.version)); rebuild the index with idx index.")
        }
        let dimension = Int(try r.u32()), count = try r.size(atMost: all.count, "document count")
        self.dimension = dimension; self.count = count
        let vectorsPerChunk = Int(try r.u32())
        let metadataPerChunk = Int(try r.u32())
        self.metadataPerChunk = metadataPerChunk
        let sectionCount = Int(try r.u32())
        _ = try r.u32()
        guard dimension > 0, dimension <= IndexManifest.maxDimension, vectorsPerChunk > 0, metadataPerChunk > 0, sectionCount < 64,
              count <= all.count / dimension else {
            throw IdxError("\(path): header fields are invalid; the segment is corrupted: rebuild the index with idx index.")
        }
        var sections: [SegmentFormat.Section: (offset: Int, length: Int, hash: UInt64)] = [:]
        for _ in 0 ..< sectionCount {
            let kind = try r.u32(); _ = try r.u32()
            let offset = try r.size(atMost: all.count, "section offset"), length = try r.size(atMost: all.count, "section length"), hash = try r.u64()
            if let k = SegmentFormat.Section(rawValue: kind) { sections[k] = (offset, length, hash) }
        }
        let headerEnd = r.position
        let storedHeaderHash = try r.u64()
        headerHash = XXHash64.hash(UnsafeRawBufferPointer(rebasing: all[0 ..< headerEnd]))
        guard headerHash == storedHeaderHash else {
            throw IdxError("\(path): header checksum mismatch; the segment is corrupted: rebuild the index with idx index.")
        }
        func section(_ k: SegmentFormat.Section, verify: Bool = true) throws -> UnsafeRawBufferPointer {
            guard let s = sections[k], s.offset >= 0, s.length >= 0, s.offset + s.length <= all.count else {
                throw IdxError("\(path): section \(k) is missing or runs past the end of the file; the segment is corrupted or truncated: rebuild the index with idx index.")
            }
            let bytes = UnsafeRawBufferPointer(rebasing: all[s.offset ..< s.offset + s.length])
            if verify && XXHash64.hash(bytes) != s.hash {
                throw IdxError("\(path): checksum mismatch in section \(k); the segment is corrupted: rebuild the index with idx index.")
            }
            return bytes
        }
        func floats(_ b: UnsafeRawBufferPointer, _ n: Int, _ k: SegmentFormat.Section) throws -> [Float] {
            guard b.count == n * 4 else { throw IdxError("\(path): section \(k) has the wrong size; the segment is corrupted.") }
            return [Float](unsafeUninitializedCapacity: n) { out, c in
                UnsafeMutableRawBufferPointer(out).copyMemory(from: b); c = n
            }
        }
        let cb = try section(.centroids)
        guard cb.count > 0, cb.count % (4 * dimension) == 0, cb.count / (4 * dimension) <= QuantizedVectors.maxCentroids else {
            throw IdxError("\(path): the centroid table has the wrong size; the segment is corrupted.")
        }
        let centroidCount = cb.count / (4 * dimension)
        self.centroidCount = centroidCount
        centroids = try floats(cb, centroidCount * dimension, .centroids)
        let lanes = (centroidCount + 31) / 32 * 32
        var byDimension = [Float](repeating: 0, count: dimension * lanes)
        for c in 0 ..< centroidCount {
            for j in 0 ..< dimension { byDimension[j * lanes + c] = centroids[c * dimension + j] }
        }
        (centroidsByDimension, centroidLanes) = (byDimension, lanes)
        let ib = try section(.centroidIds)
        guard ib.count == count else { throw IdxError("\(path): centroid ids have the wrong size; the segment is corrupted.") }
        let centroidIds = Array(ib)
        self.centroidIds = centroidIds
        if let bad = centroidIds.first(where: { Int($0) >= centroidCount }) {
            throw IdxError("\(path): centroid id \(bad) is out of range; the segment is corrupted.")
        }
        scales = try floats(section(.scales), count, .scales)
        norms = try floats(section(.norms), count, .norms)
        let g = try section(.genreIds)
        guard g.count == count * 2 else { throw IdxError("\(path): genre ids have the wrong size; the segment is corrupted.") }
        genreIds = [UInt16](unsafeUninitializedCapacity: count) { out, c in
            UnsafeMutableRawBufferPointer(out).copyMemory(from: g); c = count
        }
        var gr = ByteReader(try section(.genreNames), source: path)
        let genreCount = Int(try gr.u32())
        var names: [String] = []
        for _ in 0 ..< genreCount { names.append(try gr.string()) }
        genreNames = names
        if let bad = genreIds.first(where: { Int($0) >= genreCount }) {
            throw IdxError("\(path): genre id \(bad) is out of range; the segment is corrupted.")
        }

        func table(_ k: SegmentFormat.Section, data: SegmentFormat.Section) throws -> ([Chunk], Int) {
            var tr = ByteReader(try section(k), source: path)
            let d = try section(data, verify: false)
            let base = d.baseAddress! - all.baseAddress!
            var chunks: [Chunk] = []
            while tr.position < tr.base.count {
                // Raw lengths are bounded too: a vector chunk decodes to at most a chunk of rows,
                // a metadata chunk to at most 64 MiB (128 records of synopses).
                let c = Chunk(offset: try tr.size(atMost: d.count, "chunk offset"), length: try tr.size(atMost: d.count, "chunk length"),
                              rawLength: try tr.size(atMost: data == .vectorData ? vectorsPerChunk * dimension : 64 << 20, "chunk size"),
                              hash: try tr.u64())
                guard c.offset + c.length <= d.count else {
                    throw IdxError("\(path): a chunk of \(data) runs past its section; the segment is corrupted.")
                }
                chunks.append(c)
            }
            return (chunks, base)
        }
        let (vectorChunks, vectorBase) = try table(.vectorChunkTable, data: .vectorData)
        let (metadataChunks, metadataBase) = try table(.metadataChunkTable, data: .metadataData)
        self.metadataChunks = metadataChunks; self.metadataBase = metadataBase
        guard vectorChunks.count == (count + vectorsPerChunk - 1) / vectorsPerChunk,
              metadataChunks.count == (count + metadataPerChunk - 1) / metadataPerChunk,
              vectorChunks.reduce(0, { $0 + $1.rawLength }) == count * dimension else {
            throw IdxError("\(path): chunk tables do not match the document count; the segment is corrupted.")
        }
        vectorBytesOnDisk = vectorChunks.reduce(0) { $0 + $1.length } + count * 11 + centroidCount * dimension * 4

        // Verify (and decompress where stored compressed) the vector chunks on all cores.
        let d = dimension, n = count
        var starts: [Int] = [0]
        for c in vectorChunks { starts.append(starts.last! + c.rawLength) }
        let inPlace = vectorChunks.enumerated().allSatisfy { i, c in c.length == c.rawLength && c.offset == starts[i] }
        let owned: UnsafeMutablePointer<Int8>? = inPlace ? nil : .allocate(capacity: max(1, n * d))
        let failure = FirstError()
        let chunkStarts = starts
        // The map is only read; chunk i writes only owned[starts[i] ..< starts[i + 1]].
        let buffers = SharedWithWorkers((all: all, owned: owned))
        DispatchQueue.concurrentPerform(iterations: vectorChunks.count) { i in
            let (all, owned) = buffers.value, starts = chunkStarts
            let c = vectorChunks[i]
            let src = UnsafeRawBufferPointer(rebasing: all[vectorBase + c.offset ..< vectorBase + c.offset + c.length])
            do {
                if XXHash64.hash(src) != c.hash {
                    throw IdxError("\(path): checksum mismatch in vector chunk \(i); the segment is corrupted: rebuild the index with idx index.")
                }
                if let owned {
                    let out = UnsafeMutableRawBufferPointer(start: owned + starts[i], count: c.rawLength)
                    if c.length == c.rawLength { out.copyMemory(from: src) } else {
                        try Zstd.decompress(src, into: out, context: nil, name: path, remedy: "rebuild the index with idx index")
                    }
                }
            } catch {
                failure.record(error)
            }
        }
        do { try failure.rethrow() } catch { owned?.deallocate(); throw error }
        ownedCodes = owned
        codes = owned.map { UnsafePointer($0) }
            ?? (all.baseAddress! + vectorBase).assumingMemoryBound(to: Int8.self)
    }

    deinit { ownedCodes?.deallocate() }

    /// The genre ids whose genre list holds `name` (a film ingest merged carries several genres).
    public func genreIds(holding name: String) -> [Int] {
        genreNames.indices.filter { Genres.holds(genreNames[$0], genre: name) }
    }

    /// The decoded unit vector of `row` (renormalised).
    public func decode(_ row: Int, into out: UnsafeMutablePointer<Float>) {
        precondition(row >= 0 && row < count, "row \(row) out of range 0..<\(count)")
        var r = UInt32(row)
        decode(rows: &r, count: 1, into: out)
    }

    /// The decoded vectors of `rows[0 ..< count]` (each < `count` of the segment), one after another
    /// into `out`: (centroid + scale · code) · norm, element by element (`idx_decode_rows`).
    public func decode(rows: UnsafePointer<UInt32>, count n: Int, into out: UnsafeMutablePointer<Float>) {
        scales.withUnsafeBufferPointer { scales in norms.withUnsafeBufferPointer { norms in
            centroidIds.withUnsafeBufferPointer { cids in centroids.withUnsafeBufferPointer { centroids in
                idx_decode_rows(n, dimension, rows, codes, scales.baseAddress!, norms.baseAddress!, cids.baseAddress!,
                                centroids.baseAddress!, out)
            } }
        } }
    }

    func metadata(_ row: Int) throws -> (id: Int64, metadata: DocumentMetadata) {
        precondition(row >= 0 && row < count, "row \(row) out of range 0..<\(count)")
        let chunkIndex = row / metadataPerChunk
        let raw = try metadataChunk(chunkIndex)
        return try raw.withUnsafeBytes { b in
            // The chunk's offsets were checked when it was decompressed (recordBounds).
            let k = row - chunkIndex * metadataPerChunk, n = Int(b.loadUnaligned(as: UInt32.self).littleEndian)
            let start = Int(b.loadUnaligned(fromByteOffset: 4 + 4 * k, as: UInt32.self).littleEndian)
            let end = Int(b.loadUnaligned(fromByteOffset: 8 + 4 * k, as: UInt32.self).littleEndian)
            let recordsBase = 4 + 4 * (n + 1)
            var r = ByteReader(UnsafeRawBufferPointer(rebasing: b[recordsBase + start ..< recordsBase + end]), source: path)
            let record = try MetadataRecord.decode(&r)
            guard r.position == end - start else {
                throw IdxError("\(path): metadata record \(row) does not fill its slot in chunk \(chunkIndex); the segment is corrupted: rebuild the index with idx index.")
            }
            return record
        }
    }

    /// Decodes (and verifies) every record of every metadata chunk: the full check.
    public func verifyMetadata() throws {
        for row in 0 ..< count { _ = try metadata(row) }
    }

    /// Metadata chunk `i` decompressed, from the cache or verified and decompressed now.
    private func metadataChunk(_ i: Int) throws -> [UInt8] {
        lock.lock()
        chunkCacheClock += 1
        if let hit = chunkCache[i] {
            chunkCache[i]!.lastUse = chunkCacheClock
            lock.unlock()
            return hit.bytes
        }
        lock.unlock()
        // Decompressed outside the lock: concurrent requests do not wait on each other.
        let raw = try decompressMetadataChunk(i)
        lock.lock(); defer { lock.unlock() }
        if chunkCache[i] == nil {
            chunkCache[i] = (raw, chunkCacheClock)
            chunkCacheBytes += raw.count
            while chunkCacheBytes > metadataCacheBytes && chunkCache.count > 1,
                  let oldest = chunkCache.min(by: { $0.value.lastUse < $1.value.lastUse }) {
                chunkCacheBytes -= oldest.value.bytes.count
                chunkCache[oldest.key] = nil
            }
        }
        return raw
    }

    private func decompressMetadataChunk(_ i: Int) throws -> [UInt8] {
        let c = metadataChunks[i]
        let src = UnsafeRawBufferPointer(rebasing: file.bytes[metadataBase + c.offset ..< metadataBase + c.offset + c.length])
        guard XXHash64.hash(src) == c.hash else {
            throw IdxError("\(path): checksum mismatch in metadata chunk \(i); the segment is corrupted: rebuild the index with idx index.")
        }
        var raw = [UInt8](repeating: 0, count: c.rawLength)
        try raw.withUnsafeMutableBytes { try Zstd.decompress(src, into: $0, context: nil, name: path, remedy: "rebuild the index with idx index") }
        // Chunk: u32 n, (n + 1) u32 record offsets (from the first record), records.
        try raw.withUnsafeBytes { b in
            var r = ByteReader(b, source: path)
            let n = Int(try r.u32())
            let expected = min(metadataPerChunk, count - i * metadataPerChunk)
            guard n == expected else { throw IdxError("\(path): metadata chunk \(i) holds \(n) records, expected \(expected); the segment is corrupted.") }
            let recordsBase = 4 + 4 * (n + 1)
            var previous = 0
            for k in 0 ... n {
                let offset = Int(try r.u32())
                guard offset >= previous, (k > 0 || offset == 0), recordsBase + offset <= b.count, (k < n || recordsBase + offset == b.count) else {
                    throw IdxError("\(path): metadata chunk \(i) has a bad record offset; the segment is corrupted: rebuild the index with idx index.")
                }
                previous = offset
            }
        }
        return raw
    }
}
