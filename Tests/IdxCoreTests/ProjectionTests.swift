import XCTest
import IdxBase
import IdxProjection

final class ProjectionTests: XCTestCase {
    /// A projection file is read before its checksum can vouch for it: a count no Int holds
    /// (2^63) trapped idx serve at start-up and on a hot reload. It must be an error naming
    /// the file, as a count that merely disagrees with the index is.
    func testProjectionFileClaimingMoreThanAnIntHoldsIsAnError() throws {
        func file(count: UInt64) -> [UInt8] {
            var w = ByteWriter()
            w.raw(Array("IDXMAP".utf8) + [0, 0]); w.u32(1); w.u32(1); w.u64(count); w.u64(7)
            w.floats([0.5, -0.5]); w.u64(XXHash64.hash(w.bytes))
            return w.bytes
        }
        func decode(_ bytes: [UInt8], documents: Int) throws -> AttachedProjection {
            try bytes.withUnsafeBytes { try AttachedProjection.decode($0, path: "gen-000001/projection.idxmap", documents: documents, remedy: "attach a new one") { 7 } }
        }
        XCTAssertEqual(try decode(file(count: 1), documents: 1), AttachedProjection(method: .pca, coordinates: [0.5, -0.5]))
        for count: UInt64 in [1 << 63, .max, 1 << 61, 2] {
            XCTAssertThrowsError(try decode(file(count: count), documents: 1)) { e in
                let m = (e as? IdxError)?.message ?? "\(e)"
                XCTAssertTrue(m.contains("gen-000001/projection.idxmap: holds \(count) points"), m)
            }
        }
    }

    func testSelectionByGenreAndSample() throws {
        let genres = ["Drama", "Comedy", "Drama", "Horror", "Drama", "Comedy"]
        XCTAssertEqual(try ProjectionInput.select(genres: genres, only: ["Drama"], sample: nil, seed: 1), [0, 2, 4])
        let s = try ProjectionInput.select(genres: genres, only: [], sample: 3, seed: 42)
        XCTAssertEqual(s.count, 3)
        XCTAssertEqual(s, s.sorted())
        XCTAssertEqual(s, try ProjectionInput.select(genres: genres, only: [], sample: 3, seed: 42))
        XCTAssertThrowsError(try ProjectionInput.select(genres: genres, only: ["Western"], sample: nil, seed: 1)) { e in
            let m = (e as? IdxError)?.message ?? ""
            XCTAssertTrue(m.contains("Western") && m.contains("Comedy, Drama, Horror"), m)
        }
        XCTAssertThrowsError(try ProjectionInput.select(genres: [], only: [], sample: nil, seed: 1))
    }

    func testReadVectorsChecksSize() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("idx-proj-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("v.f32").path
        let values: [Float] = [1, 2, 3, 4, 5, 6]
        try values.withUnsafeBytes { Data($0) }.write(to: URL(fileURLWithPath: path))
        let (data, rows) = try ProjectionInput.readVectors(path: path, dim: 3)
        XCTAssertEqual(rows, 2); XCTAssertEqual(data, values)
        XCTAssertThrowsError(try ProjectionInput.readVectors(path: path, dim: 4))
    }

    func testLabelledTextsReadAndNormalise() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("idx-proj-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("t.tsv").path
        try "An alien robot lands.\tSci-Fi\r\n\nTwo strangers kiss, at last\tRomance\nNo label here\n".write(toFile: path, atomically: true, encoding: .utf8)
        let t = try LabelledTexts.read(path: path)
        XCTAssertEqual(t.texts, ["An alien robot lands.", "Two strangers kiss, at last", "No label here"])
        XCTAssertEqual(t.labels, ["Sci-Fi", "Romance", ""])
        try "\tOnly a label\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try LabelledTexts.read(path: path)) { e in
            XCTAssertTrue((e as? IdxError)?.message.contains("line 1") ?? false)
        }
        var x: [Float] = [3, 4, 0, 0]
        UnitVectors.normalizeRows(&x, dimension: 2)
        XCTAssertEqual(x, [0.6, 0.8, 0, 0])
        XCTAssertEqual(LabelledTexts.shortLabel("one two three four five"), "one two three four…")
    }
}
