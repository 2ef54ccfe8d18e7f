import Foundation
import IdxBase
import IdxStore
import IdxSearch
import IdxProjection

/// One published generation, opened for serving: the search engine (the one search path),
/// the id → row table the API's document routes need, and the map. Immutable once built, so
/// a request that took it keeps a consistent view while a newer generation replaces it.
public final class ServedGeneration: @unchecked Sendable {
    public let engine: SearchEngine
    public let map: ServedMap
    /// Every single genre a document holds (what a search's genre filter takes), sorted.
    public let genres: [String]
    /// The stored id of each row, and the first row holding each id.
    let ids: [Int64]
    private let rowById: [Int64: Int]
    /// What the watcher compares to notice a newly attached projection.
    let projectionStamp: FileStamp?
    /// Why an attached projection was not used (served instead: a PCA computed at load).
    public let mapWarning: String?

    public var reader: VectorIndexReader { engine.reader }
    public var generation: String { engine.reader.generation }

    public init(index: String) throws {
        engine = try SearchEngine(index: index)
        let reader = engine.reader
        ids = try reader.documentIds()
        var byId = [Int64: Int](minimumCapacity: ids.count)
        for (row, id) in ids.enumerated() where byId[id] == nil { byId[id] = row }
        rowById = byId
        projectionStamp = FileStamp(path: AttachedProjection.path(of: reader))
        var projection: AttachedProjection?
        var source = ServedMap.Source.attached
        var warning: String?
        do { projection = try AttachedProjection.read(for: reader) } catch let e as IdxError {
            warning = e.message
        }
        if projection == nil {
            projection = try AttachedProjection.pca(of: reader)
            source = .computedAtLoad
        }
        mapWarning = warning
        map = ServedMap(projection: projection!, source: source, genres: reader.primaryGenreTable(), ids: ids)
        genres = reader.genreNames()
    }

    /// The row of the document with stored id `id` (its first, if an index repeats ids).
    func row(ofId id: Int64) -> Int? { rowById[id] }

    var idRange: String { ids.isEmpty ? "none" : "\(ids.min()!)…\(ids.max()!)" }

    /// Number of the generation ("gen-000012" → 12).
    public var generationNumber: Int { Int(generation.dropFirst(4)) ?? 0 }
}

/// What is served at /map: one 2-D point per document, its primary genre and its id.
public struct ServedMap: Sendable {
    public enum Source: String, Sendable {
        case attached = "attached"
        case computedAtLoad = "computed at load"
    }

    public let method: ProjectionMethod
    public let source: Source
    public let count: Int
    public let genres: [String]
    /// The binary form the map page downloads (see `binary`), built once per generation.
    public let binary: [UInt8]
    let coordinates: [Float]
    let genreOfDocument: [UInt16]
    let ids: [Int64]

    init(projection: AttachedProjection, source: Source, genres: (names: [String], genreOfDocument: [UInt16]), ids: [Int64]) {
        method = projection.method
        self.source = source
        count = projection.count
        self.genres = genres.names
        coordinates = projection.coordinates
        genreOfDocument = genres.genreOfDocument
        self.ids = ids
        binary = Self.encode(coordinates: coordinates, genreOfDocument: genreOfDocument, ids: ids, genres: genres.names,
                             method: method, source: source)
    }

    /// `/map.bin`: u32 length of a JSON header ({count, genres, method, source}), the header,
    /// zero padding to 8 bytes, then count × f32 x, count × f32 y, count × f64 id (exact to
    /// 2^53), count × u16 genre (little-endian; typed arrays read it in place).
    static func encode(coordinates: [Float], genreOfDocument: [UInt16], ids: [Int64], genres: [String],
                       method: ProjectionMethod, source: Source) -> [UInt8] {
        let n = ids.count
        let header: [String: Any] = ["count": n, "genres": genres, "method": method.rawValue, "source": source.rawValue]
        let headerBytes = [UInt8]((try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])) ?? Data("{}".utf8))
        var out: [UInt8] = []
        out.reserveCapacity(16 + headerBytes.count + n * 18)
        withUnsafeBytes(of: UInt32(headerBytes.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: headerBytes)
        while out.count % 8 != 0 { out.append(0) }
        for i in 0 ..< n { withUnsafeBytes(of: coordinates[2 * i].bitPattern.littleEndian) { out.append(contentsOf: $0) } }
        for i in 0 ..< n { withUnsafeBytes(of: coordinates[2 * i + 1].bitPattern.littleEndian) { out.append(contentsOf: $0) } }
        for id in ids { withUnsafeBytes(of: Double(id).bitPattern.littleEndian) { out.append(contentsOf: $0) } }
        for g in genreOfDocument { withUnsafeBytes(of: g.littleEndian) { out.append(contentsOf: $0) } }
        return out
    }

    /// `/map` as JSON: parallel arrays, one entry per document in index order.
    func jsonObject(generation: String) -> [String: Any] {
        var x = [Double](), y = [Double]()
        x.reserveCapacity(count); y.reserveCapacity(count)
        for i in 0 ..< count {
            x.append(Double(coordinates[2 * i]))
            y.append(Double(coordinates[2 * i + 1]))
        }
        return ["generation": generation, "method": method.rawValue, "source": source.rawValue, "count": count,
                "genres": genres, "x": x, "y": y, "genre": genreOfDocument.map { Int($0) }, "id": ids]
    }
}

/// Size and modification time of a file: enough to notice that it was replaced.
struct FileStamp: Equatable {
    var size: Int64
    var modified: TimeInterval
    init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        size = Int64(st.st_size)
        modified = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
    }
}
