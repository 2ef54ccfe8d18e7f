import Foundation
import XCTest
import IdxBase
import IdxCorpus
@testable import IdxStore

/// Synthetic vectors and metadata (no corpus or model needed).
enum Synthetic {
    struct Generator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }
        mutating func gaussian() -> Float {
            let u = max(uniform(), 1e-7), v = uniform()
            return (-2 * log(u)).squareRoot() * cos(2 * .pi * v)
        }
    }

    /// `count` vectors around `clusters` centres plus a common offset (anisotropic, like embeddings).
    static func clustered(count: Int, dimension d: Int, clusters: Int, noise: Float, common: Float = 1, seed: UInt64 = 1) -> [Float] {
        var g = Generator(state: seed)
        let offset = (0 ..< d).map { _ in g.gaussian() * common }
        let centres = (0 ..< clusters * d).map { _ in g.gaussian() }
        var v = [Float](repeating: 0, count: count * d)
        for i in 0 ..< count {
            let c = Int(g.next() % UInt64(clusters))
            for j in 0 ..< d { v[i * d + j] = offset[j] + centres[c * d + j] + noise * g.gaussian() }
        }
        return v
    }

    static let genres = ["Action", "Comedy", "Drama", "Sci-Fi", "Horror"]

    static func metadata(count: Int, tag: String = "doc") -> [DocumentMetadata] {
        (0 ..< count).map { i in
            DocumentMetadata(title: "\(tag) \(i) ☃", year: i % 7 == 0 ? nil : 1950 + i % 70, genre: genres[i % genres.count],
                             expandedGenres: genres[i % genres.count] + ", Drama", rating: i % 5 == 0 ? nil : Float(i % 90) / 10,
                             description: "the description of \(tag) \(i), long enough to be worth compressing",
                             sourceFile: "synthetic.csv", sourceRow: i + 1)
        }
    }

    static let provenance = IndexProvenance(modelHash: "00000000000000aa", tokenizerHash: "00000000000000bb",
                                            modelDirectory: "", maxTokens: 32, source: "synthetic")

    static func unit(_ v: [Float], dimension d: Int) -> [Float] {
        var u = v
        VectorIndexWriter.prepare(&u, dimension: d, standardization: nil)
        return u
    }
}

final class StoreTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "idx-store-\(getpid())-\(UInt32.random(in: 0 ... .max))/index"
    }

    override func tearDownWithError() throws {
        IndexCommit.beforeSwitch = nil
        try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: dir).deletingLastPathComponent().path)
    }

    func testRoundTripKeepsMetadataAndVectors() throws {
        let d = 100, n = 1000 // not a multiple of the chunk sizes or of 32 lanes
        let v = Synthetic.clustered(count: n, dimension: d, clusters: 10, noise: 0.5)
        let meta = Synthetic.metadata(count: n)
        let result = try VectorIndexWriter.write(directory: dir, embeddings: v, dimension: d, metadata: meta,
                                                 provenance: Synthetic.provenance, append: false, standardize: false)
        XCTAssertLessThanOrEqual(Double(result.vectorBytes) / Double(n), 0.30 * Double(4 * d))
        let r = try VectorIndexReader(directory: dir)
        XCTAssertEqual(r.count, n)
        XCTAssertEqual(r.dimension, d)
        XCTAssertEqual(r.modelHash, "00000000000000aa")
        XCTAssertEqual(r.tokenizerHash, "00000000000000bb")
        for i in [0, 1, 127, 128, 500, 999] {
            XCTAssertEqual(r.metadata(i), meta[i])
            XCTAssertEqual(try r.documentId(i), Int64(i))
        }
        let u = Synthetic.unit(v, dimension: d)
        let back = r.dequantizedVectors()
        XCTAssertEqual(back.count, n * d)
        var worstCos: Float = 1
        for i in 0 ..< n {
            var dot: Float = 0, norm: Float = 0
            for j in 0 ..< d { dot += u[i * d + j] * back[i * d + j]; norm += back[i * d + j] * back[i * d + j] }
            XCTAssertEqual(norm, 1, accuracy: 1e-4)
            worstCos = min(worstCos, dot)
        }
        XCTAssertGreaterThan(worstCos, 0.9995)
    }

    /// A film ingest merged from several genre files ("Animation, Adventure") is one map colour,
    /// its first genre's: a legend of the lists themselves listed every combination and
    /// covered the map. A genre that is never first still filters.
    func testMapColoursAFilmByItsFirstGenre() throws {
        let d = 8
        let genres = ["Animation, Adventure", "Sci-Fi", "Adventure, Sci-Fi", "Animation", "Animation, Sci-Fi, Family"]
        let meta = Synthetic.metadata(count: genres.count).enumerated().map { i, m -> DocumentMetadata in
            var m = m
            m.genre = genres[i]
            return m
        }
        _ = try VectorIndexWriter.write(directory: dir, embeddings: Synthetic.clustered(count: genres.count, dimension: d, clusters: 2, noise: 1),
                                        dimension: d, metadata: meta, provenance: Synthetic.provenance, append: false, standardize: false)
        let r = try VectorIndexReader(directory: dir)
        let table = r.primaryGenreTable()
        XCTAssertEqual(table.genreOfDocument.map { table.names[Int($0)] }, ["Animation", "Sci-Fi", "Adventure", "Animation", "Animation"])
        XCTAssertEqual(Set(table.names), ["Animation", "Sci-Fi", "Adventure"])
        XCTAssertEqual(r.genreNames(), ["Adventure", "Animation", "Family", "Sci-Fi"])
    }

    func testAppendAddsASegmentAndKeepsTheOthers() throws {
        let d = 32
        let a = Synthetic.clustered(count: 300, dimension: d, clusters: 5, noise: 0.3, seed: 1)
        let b = Synthetic.clustered(count: 200, dimension: d, clusters: 5, noise: 0.3, seed: 2)
        let first = try VectorIndexWriter.write(directory: dir, embeddings: a, dimension: d, metadata: Synthetic.metadata(count: 300, tag: "a"),
                                                provenance: Synthetic.provenance, append: false, standardize: true)
        let firstSegment = try Data(contentsOf: URL(fileURLWithPath: first.segmentPath))
        let second = try VectorIndexWriter.write(directory: dir, embeddings: b, dimension: d, metadata: Synthetic.metadata(count: 200, tag: "b"),
                                                 provenance: Synthetic.provenance, append: true, standardize: false)
        XCTAssertEqual(second.manifest.segments.count, 2)
        XCTAssertEqual(second.manifest.standardization, first.manifest.standardization) // same space for appended vectors
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: first.segmentPath)), firstSegment) // untouched
        let r = try VectorIndexReader(directory: dir)
        XCTAssertEqual(r.count, 500)
        XCTAssertEqual(r.metadata(299).title, "a 299 ☃")
        XCTAssertEqual(r.metadata(300).title, "b 0 ☃")
        XCTAssertEqual(try r.documentId(300), 0)

        // Appending with another model is refused.
        var other = Synthetic.provenance
        other.modelHash = "ffffffffffffffff"
        XCTAssertThrowsError(try VectorIndexWriter.write(directory: dir, embeddings: b, dimension: d, metadata: Synthetic.metadata(count: 200),
                                                         provenance: other, append: true, standardize: false))
        // A rebuild without --append replaces the content and drops unreferenced old segments later.
        _ = try VectorIndexWriter.write(directory: dir, embeddings: b, dimension: d, metadata: Synthetic.metadata(count: 200, tag: "c"),
                                        provenance: Synthetic.provenance, append: false, standardize: false)
        XCTAssertEqual(try VectorIndexReader(directory: dir).count, 200)
    }

    func testCorruptedSegmentIsNamed() throws {
        let d = 32, n = 20000
        let v = Synthetic.clustered(count: n, dimension: d, clusters: 5, noise: 0.3)
        let result = try VectorIndexWriter.write(directory: dir, embeddings: v, dimension: d, metadata: Synthetic.metadata(count: n),
                                                 provenance: Synthetic.provenance, append: false, standardize: false)
        let original = try Data(contentsOf: URL(fileURLWithPath: result.segmentPath))
        // Flip one byte in the header, in the scales, in the vector data and near the end (metadata).
        for position in [20, 2000, original.count / 3, original.count - 10] {
            var bad = original
            bad[position] ^= 0x5A
            try bad.write(to: URL(fileURLWithPath: result.segmentPath))
            XCTAssertThrowsError(try VectorIndexReader(directory: dir), "byte \(position)") { error in
                let message = (error as? IdxError)?.message ?? ""
                XCTAssertTrue(message.contains(result.segmentPath), message)
            }
        }
        // Metadata corruption is caught on first read by the lazy (search) reader, never served.
        var bad = original
        bad[original.count - 10] ^= 0x5A
        try bad.write(to: URL(fileURLWithPath: result.segmentPath))
        let lazy = try VectorIndexReader(directory: dir, verification: .onFirstRead)
        XCTAssertThrowsError(try lazy.documentMetadata(n - 1))
        // Truncation too.
        try original.prefix(original.count / 2).write(to: URL(fileURLWithPath: result.segmentPath))
        XCTAssertThrowsError(try VectorIndexReader(directory: dir, verification: .onFirstRead))
    }

    func testCrashDuringPublishLeavesTheOldGenerationServing() throws {
        let d = 32
        let a = Synthetic.clustered(count: 100, dimension: d, clusters: 3, noise: 0.3, seed: 3)
        _ = try VectorIndexWriter.write(directory: dir, embeddings: a, dimension: d, metadata: Synthetic.metadata(count: 100, tag: "old"),
                                        provenance: Synthetic.provenance, append: false, standardize: false)
        struct Crash: Error {}
        IndexCommit.beforeSwitch = { throw Crash() }
        XCTAssertThrowsError(try VectorIndexWriter.write(directory: dir, embeddings: a, dimension: d,
                                                         metadata: Synthetic.metadata(count: 100, tag: "new"),
                                                         provenance: Synthetic.provenance, append: true, standardize: false))
        var r = try VectorIndexReader(directory: dir)
        XCTAssertEqual(r.generation, "gen-000001")
        XCTAssertEqual(r.count, 100)
        XCTAssertEqual(r.metadata(0).title, "old 0 ☃")
        // The next publish succeeds over the crash's leftovers.
        IndexCommit.beforeSwitch = nil
        _ = try VectorIndexWriter.write(directory: dir, embeddings: a, dimension: d, metadata: Synthetic.metadata(count: 100, tag: "new"),
                                        provenance: Synthetic.provenance, append: true, standardize: false)
        r = try VectorIndexReader(directory: dir)
        XCTAssertEqual(r.generation, "gen-000002")
        XCTAssertEqual(r.count, 200)
        XCTAssertEqual(r.metadata(100).title, "new 0 ☃")
    }

    func testNewerFormatIsRefused() throws {
        let d = 32
        let a = Synthetic.clustered(count: 50, dimension: d, clusters: 3, noise: 0.3)
        let result = try VectorIndexWriter.write(directory: dir, embeddings: a, dimension: d, metadata: Synthetic.metadata(count: 50),
                                                 provenance: Synthetic.provenance, append: false, standardize: false)
        let manifestPath = dir + "/" + result.generation + "/manifest.json"
        let original = try String(contentsOfFile: manifestPath, encoding: .utf8)
        try original.replacingOccurrences(of: "\"formatVersion\" : 1", with: "\"formatVersion\" : 99")
            .write(toFile: manifestPath, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try VectorIndexReader(directory: dir)) { error in
            let message = (error as? IdxError)?.message ?? ""
            XCTAssertTrue(message.contains("newer than this idx"), message)
        }
        try original.write(toFile: manifestPath, atomically: true, encoding: .utf8)
        // A segment of a newer version (header rewritten, header hash fixed) is refused too.
        var seg = [UInt8](try Data(contentsOf: URL(fileURLWithPath: result.segmentPath)))
        seg[8] = 2
        try Data(seg).write(to: URL(fileURLWithPath: result.segmentPath))
        XCTAssertThrowsError(try VectorIndexReader(directory: dir)) { error in
            XCTAssertTrue(((error as? IdxError)?.message ?? "").contains("newer than this idx"))
        }
    }

    func testMissingIndexSaysHowToBuildOne() {
        XCTAssertThrowsError(try VectorIndexReader(directory: dir)) { error in
            XCTAssertTrue(((error as? IdxError)?.message ?? "").contains("idx index"))
        }
    }
}
