import Foundation
import IdxBase
import IdxStore

/// The projection methods idx computes (idx project --method, the nightly refresh, idx serve).
public enum ProjectionMethod: String, CaseIterable, Codable, Sendable {
    case pca, tsne
}

/// A 2-D projection stored inside an index generation (`gen-NNNNNN/projection.idxmap`), one
/// point per document in index order, so that the map idx serve draws is the one computed
/// offline (`idx project --attach`). The file is bound to its generation: it records the
/// XXH64 of the generation's manifest.json, and a reader refuses a file written for
/// another generation, another count, a newer format or with a bad checksum.
///
/// Layout (format version 1, little-endian):
///     magic "IDXMAP\0\0" | u32 version | u32 method (1 pca, 2 tsne) | u64 count
///     | u64 XXH64 of the generation's manifest.json | count × (f32 x, f32 y)
///     | u64 XXH64 of every byte before it
public struct AttachedProjection: Equatable, Sendable {
    public static let fileName = "projection.idxmap"
    public static let version: UInt32 = 1
    static let magic: [UInt8] = Array("IDXMAP".utf8) + [0, 0]

    public var method: ProjectionMethod
    /// count × 2: x then y of each document, in index order.
    public var coordinates: [Float]
    public var count: Int { coordinates.count / 2 }

    public init(method: ProjectionMethod, coordinates: [Float]) {
        self.method = method
        self.coordinates = coordinates
    }

    public static func path(of reader: VectorIndexReader) -> String {
        reader.generationDirectory + "/" + fileName
    }

    static func manifestHash(_ reader: VectorIndexReader) throws -> UInt64 {
        let path = IndexLayout.manifestPath(reader.directory, generation: reader.generation)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw IdxError("\(path): missing; the index is damaged: rebuild it with idx index.")
        }
        return XXHash64.hash(data)
    }

    /// Writes the projection into the generation `reader` opened (atomically: a reader sees
    /// the previous file or this one). Refuses coordinates that do not cover every document.
    public func attach(to reader: VectorIndexReader) throws {
        guard count == reader.count, coordinates.count == 2 * reader.count else {
            throw IdxError("--attach: the projection has \(count) points but \(reader.directory) holds \(reader.count) documents; project the whole index (no --sample, --genre or --texts).")
        }
        var w = ByteWriter()
        w.raw(Self.magic)
        w.u32(Self.version)
        w.u32(method == .pca ? 1 : 2)
        w.u64(UInt64(count))
        w.u64(try Self.manifestHash(reader))
        w.floats(coordinates)
        w.u64(XXHash64.hash(w.bytes))
        try AtomicFile.write(Data(w.bytes), to: Self.path(of: reader))
    }

    /// The projection attached to the generation `reader` opened; nil when there is none.
    public static func read(for reader: VectorIndexReader) throws -> AttachedProjection? {
        let path = path(of: reader)
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try data.withUnsafeBytes { all in
            try decode(all, path: path, documents: reader.count,
                       remedy: "attach a new one with idx project --index \(reader.directory) --method tsne --attach") {
                try manifestHash(reader)
            }
        }
    }

    /// A projection file's bytes, checked for an index of `documents` documents whose
    /// manifest.json hashes to `manifestHash()` (asked only once the file's own checks pass).
    /// Every field is checked before it is used: a file may say anything (a count of 2^63 once
    /// stopped idx serve on a trap).
    public static func decode(_ all: UnsafeRawBufferPointer, path: String, documents: Int, remedy: String,
                              manifestHash: () throws -> UInt64) throws -> AttachedProjection {
        guard all.count >= 40 else { throw IdxError("\(path): truncated (\(all.count) bytes); \(remedy).") }
        let body = UnsafeRawBufferPointer(rebasing: all[0 ..< all.count - 8])
        var r = ByteReader(all, source: path)
        guard Array(try r.bytes(8)) == magic else { throw IdxError("\(path): not an idx projection (bad magic bytes); \(remedy).") }
        let version = try r.u32()
        guard version <= Self.version else {
            throw IdxError("\(path): projection format version \(version) is newer than this idx understands (\(Self.version)); upgrade idx, or \(remedy).")
        }
        let methodCode = try r.u32()
        let n = try r.u64()
        let boundTo = try r.u64()
        guard n == UInt64(max(0, documents)), n <= UInt64(all.count) / 8, UInt64(all.count) == 40 + 8 * n else {
            throw IdxError("\(path): holds \(n) points in \(all.count) bytes for an index of \(documents) documents; \(remedy).")
        }
        var tail = ByteReader(all, at: all.count - 8, source: path)
        guard try tail.u64() == XXHash64.hash(body) else { throw IdxError("\(path): checksum mismatch; the file is damaged: \(remedy).") }
        guard boundTo == (try manifestHash()) else {
            throw IdxError("\(path): was written for another manifest of this generation; \(remedy).")
        }
        guard let method: ProjectionMethod = methodCode == 1 ? .pca : methodCode == 2 ? .tsne : nil else {
            throw IdxError("\(path): unknown projection method code \(methodCode); \(remedy).")
        }
        let count = Int(n)
        var coords = [Float](repeating: 0, count: 2 * count)
        coords.withUnsafeMutableBytes { dst in dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: all[32 ..< 32 + 8 * count])) }
        return AttachedProjection(method: method, coordinates: coords)
    }

    /// The projection of every document of the index, with the method's defaults (t-SNE:
    /// perplexity 30, 1000 iterations, PCA initialisation, Barnes-Hut past 1000 points).
    public static func compute(_ method: ProjectionMethod, of reader: VectorIndexReader) throws -> AttachedProjection {
        switch method {
        case .pca: return try pca(of: reader)
        case .tsne:
            var options = TSNEOptions()
            options.perplexity = min(30, Double(max(1, reader.count - 1)) / 3)
            let result = try TSNE.run(reader.dequantizedVectors(), n: reader.count, d: reader.dimension, options: options) { _, _ in }
            return AttachedProjection(method: .tsne, coordinates: result.embedding)
        }
    }

    /// The first two principal components of the index's decoded vectors (the map idx serve
    /// draws when no projection is attached).
    public static func pca(of reader: VectorIndexReader) throws -> AttachedProjection {
        let n = reader.count, d = reader.dimension
        guard n >= 2 else { return AttachedProjection(method: .pca, coordinates: [Float](repeating: 0, count: 2 * n)) }
        let fit = try PCA.fit(reader.dequantizedVectors(), rows: n, dim: d, components: min(2, d))
        let coords = fit.k == 2 ? fit.coordinates : fit.coordinates.flatMap { [$0, 0] }
        return AttachedProjection(method: .pca, coordinates: coords)
    }
}
