import Foundation
import XCTest
@testable import IdxStore

/// The one commit path of an index folder (IndexCommit): concurrent writers lose no
/// segment, garbage collection spares a generation in progress, and the manifest's
/// model path survives a move of the project folder.
final class IndexCommitTests: XCTestCase {
    var dir: String!
    let d = 16

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "idx-commit-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func write(_ tag: String, count: Int, append: Bool, seed: UInt64) throws -> VectorIndexWriter.Result {
        try Self.write(into: dir, dimension: d, tag, count: count, append: append, seed: seed)
    }

    static func write(into dir: String, dimension d: Int, _ tag: String, count: Int, append: Bool, seed: UInt64) throws -> VectorIndexWriter.Result {
        try VectorIndexWriter.write(directory: dir, embeddings: Synthetic.clustered(count: count, dimension: d, clusters: 3, noise: 0.3, seed: seed),
                                    dimension: d, metadata: Synthetic.metadata(count: count, tag: tag),
                                    provenance: Synthetic.provenance, append: append, standardize: false)
    }

    func segmentFiles() throws -> Set<String> {
        Set(try FileManager.default.contentsOfDirectory(atPath: dir + "/segments").filter { !$0.hasPrefix(".") }.map { "segments/" + $0 })
    }

    /// Every file the live generation lists is there, and nothing else is (no leaked segment).
    func assertConsistent(file: StaticString = #filePath, line: UInt = #line) throws -> VectorIndexReader {
        let reader = try VectorIndexReader(directory: dir)
        var kept = Set(reader.manifest.segments.flatMap(\.files))
        let prior = dir + "/" + IndexLayout.generationName(reader.manifest.generation - 1) + "/manifest.json"
        if let data = FileManager.default.contents(atPath: prior), let m = try? JSONDecoder().decode(IndexManifest.self, from: data) {
            kept.formUnion(m.segments.flatMap(\.files))
        }
        XCTAssertEqual(try segmentFiles(), kept, "segments on disk against those the kept generations list", file: file, line: line)
        return reader
    }

    func testTwoConcurrentAppendsLoseNoSegment() throws {
        _ = try write("base", count: 40, append: false, seed: 1)
        // Both begin on generation 1; each commit appends onto what is live when it commits.
        let group = DispatchGroup()
        let failures = Locked<[Error]>([])
        let dir: String = dir, d = d
        for (i, tag) in ["left", "right"].enumerated() {
            DispatchQueue.global().async(group: group) {
                do { _ = try Self.write(into: dir, dimension: d, tag, count: 30 + i, append: true, seed: UInt64(2 + i)) } catch {
                    failures.mutate { $0.append(error) }
                }
            }
        }
        group.wait()
        XCTAssertTrue(failures.current.isEmpty, "\(failures.current)")
        let reader = try assertConsistent()
        XCTAssertEqual(reader.generation, "gen-000003")
        XCTAssertEqual(reader.count, 40 + 30 + 31)
        let titles = Set((0 ..< reader.count).map { reader.metadata($0).title })
        for t in ["base 39 ☃", "left 29 ☃", "right 30 ☃"] { XCTAssertTrue(titles.contains(t), t) }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir + "/segments").filter { $0.hasPrefix(".") }
        XCTAssertEqual(leftovers, [], "no pending marker or temporary file is left")
    }

    func testGarbageCollectionSparesAGenerationInProgress() throws {
        _ = try write("first", count: 20, append: false, seed: 1)
        // A writer begins generation 2 and writes its segment, but has not committed yet...
        let slow = try IndexCommit.begin(directory: dir, dimension: d, provenance: Synthetic.provenance, append: false, lexicalWeight: 0.4)
        let rows = Synthetic.clustered(count: 25, dimension: d, clusters: 3, noise: 0.3, seed: 9)
        let segment = try VectorIndexWriter.writeSegment(directory: dir, generation: slow.plan.generation, embeddings: rows, dimension: d,
                                                         metadata: Synthetic.metadata(count: 25, tag: "slow"), ids: (0 ..< 25).map(Int64.init),
                                                         standardization: nil, source: "synthetic", lexical: true)
        // ...when another writer publishes twice, collecting garbage each time.
        _ = try write("fast", count: 10, append: false, seed: 3)
        _ = try write("faster", count: 12, append: false, seed: 4)
        for f in segment.entry.files {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/" + f), "\(f) of the generation in progress was collected")
        }
        let manifest = try slow.commit(segments: [segment.entry], dimension: d, provenance: Synthetic.provenance, standardization: nil)
        XCTAssertEqual(manifest.generation, 4)
        let reader = try assertConsistent()
        XCTAssertEqual(reader.count, 25)
        XCTAssertEqual(reader.metadata(0).title, "slow 0 ☃")
    }

    func testSegmentsOfADeadWriterAreCollected() throws {
        _ = try write("first", count: 20, append: false, seed: 1)
        let orphan = try IndexCommit.begin(directory: dir, dimension: d, provenance: Synthetic.provenance, append: false, lexicalWeight: nil)
        let segment = try VectorIndexWriter.writeSegment(directory: dir, generation: orphan.plan.generation,
                                                         embeddings: Synthetic.clustered(count: 5, dimension: d, clusters: 2, noise: 0.3),
                                                         dimension: d, metadata: Synthetic.metadata(count: 5, tag: "orphan"),
                                                         ids: (0 ..< 5).map(Int64.init), standardization: nil, source: "synthetic", lexical: false)
        // The writer "dies": its marker now names a process that is not this one (another start time).
        let markers = try FileManager.default.contentsOfDirectory(atPath: dir + "/segments").filter { $0.hasPrefix(PendingGeneration.prefix) }
        XCTAssertEqual(markers.count, 1)
        let marker = dir + "/segments/" + markers[0]
        var p = PendingGeneration(try String(contentsOfFile: marker, encoding: .utf8))!
        p.holder.startTime += 1
        try p.text.write(toFile: marker, atomically: false, encoding: .utf8)
        _ = try write("next", count: 10, append: false, seed: 3)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/" + segment.entry.file))
        XCTAssertFalse(FileManager.default.fileExists(atPath: marker))
        _ = try assertConsistent()
        withExtendedLifetime(orphan) {}
    }

    func testModelPathIsRecordedRelativeAndResolvedFromTheIndex() {
        XCTAssertEqual(ModelPath.relative("/p/models/m", from: "/p/indexes/i"), "../../models/m")
        XCTAssertEqual(ModelPath.resolve("../../models/m", index: "/q/indexes/i"), "/q/models/m")
        XCTAssertEqual(ModelPath.resolve("../../models/m", index: "indexes/i"), "models/m")
        XCTAssertEqual(ModelPath.resolve("/abs/model", index: "indexes/i"), "/abs/model", "old manifests hold absolute paths")
        XCTAssertEqual(ModelPath.resolve("", index: "indexes/i"), "", "an index of raw vectors has no model")
        XCTAssertEqual(ModelPath.recorded("/abs/model", index: "indexes/i"), "/abs/model", "absolute when given so")
        XCTAssertEqual(ModelPath.reexpress("../model", from: "/s/candidate/index", to: "/p/indexes/i"), "../../../s/candidate/model")
    }
}
