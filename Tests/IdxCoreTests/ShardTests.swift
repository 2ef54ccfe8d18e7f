import Foundation
import XCTest
import IdxBase
@testable import IdxCorpus

final class ShardTests: XCTestCase {
    func ingest(_ csv: String, shardDocs: Int, in dir: String) throws -> (Ingest.Summary, String) {
        IngestTestSupport.write(csv, to: dir + "/in.csv")
        let out = dir + "/corpus"
        let s = try Ingest.run(.init(inputs: [dir + "/in.csv"], output: out, vocabSize: 40, shardDocuments: shardDocs, showProgress: false))
        return (s, out)
    }

    func testRoundTripAcrossShards() throws {
        let dir = IngestTestSupport.tempDir(self)
        let (summary, out) = try ingest(IngestTestSupport.movies(23), shardDocs: 5, in: dir)
        XCTAssertEqual(summary.documents, 23)
        XCTAssertEqual(summary.shards, 5)
        let reader = try CorpusReader(directory: out)
        XCTAssertEqual(reader.documentCount, 23)
        let tok = try reader.tokenizer()
        XCTAssertEqual(reader.tokenizerHash, tok.hash)
        let corpus = try reader.readTokens()
        let meta = try reader.readMetadata()
        XCTAssertEqual(corpus.count, 23)
        XCTAssertEqual(meta.count, 23)
        XCTAssertEqual(corpus.tokens.count, summary.tokens)
        for i in 0 ..< 23 {
            XCTAssertEqual(Array(corpus.document(i)), tok.encode(meta[i].description), "document \(i)")
            XCTAssertEqual(meta[i].sourceRow, i + 1)
            XCTAssertEqual(meta[i].sourceFile, dir + "/in.csv")
        }
        XCTAssertEqual(meta[7], DocumentMetadata(title: "Movie 7, Part 1", year: 1957, genre: "Drama", expandedGenres: "Drama, War",
                                                rating: 7.0, description: "Hero 7 loses an old map and the city.",
                                                sourceFile: dir + "/in.csv", sourceRow: 8))
        XCTAssertTrue(try reader.verify().contains("23 documents"))
    }

    func testTokenShardEncodingRoundTripsLargeIds() throws {
        XCTAssertEqual(TokenShard.idBytes(vocabSize: 65_536), 2)
        XCTAssertEqual(TokenShard.idBytes(vocabSize: 65_537), 4)
        for (ids, width) in [([Int32(5), 70_000, 1, 2_000_000, 3], 4), ([Int32(5), 65_535, 1, 0, 3], 2)] {
            let bytes = TokenShard.encode(ids: ids, offsets: [0, 2, 2, 5], idBytes: width)
            XCTAssertEqual(bytes.count, 32 + 8 * 4 + width * 5)
            let packed = Zstd.compress(bytes, level: 1)
            var corpus = TokenizedCorpus()
            try TokenShard.decode(try Zstd.decompress(packed, name: "x", remedy: "test"), name: "x", documents: 3, tokens: 5, into: &corpus)
            XCTAssertEqual(corpus.tokens, ids)
            XCTAssertEqual(corpus.offsets, [0, 2, 2, 5])
            XCTAssertThrowsError(try TokenShard.decode(bytes, name: "x", documents: 4, tokens: 5, into: &corpus))
        }
    }

    func testCorruptedShardIsNamed() throws {
        let dir = IngestTestSupport.tempDir(self)
        let (_, out) = try ingest(IngestTestSupport.movies(12), shardDocs: 4, in: dir)
        let victim = out + "/tokens-00001.bin.zst"
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: victim)))
        bytes[bytes.count / 2] ^= 0x40
        IngestTestSupport.write(bytes, to: victim)
        let reader = try CorpusReader(directory: out)
        for action in [{ _ = try reader.readTokens() }, { _ = try reader.verify() }] {
            XCTAssertThrowsError(try action()) { e in
                let m = (e as? IdxError)?.message ?? "\(e)"
                XCTAssertTrue(m.contains("tokens-00001.bin.zst") && m.contains("checksum"), m)
            }
        }
        // Metadata shards are checked too.
        let meta = out + "/metadata-00002.jsonl.zst"
        var mb = [UInt8](try Data(contentsOf: URL(fileURLWithPath: meta)))
        mb[0] ^= 1
        IngestTestSupport.write(mb, to: meta)
        XCTAssertThrowsError(try reader.readMetadata()) { XCTAssertTrue(($0 as! IdxError).message.contains("metadata-00002")) }
    }

    func testReaderErrorsAreClear() throws {
        let dir = IngestTestSupport.tempDir(self)
        XCTAssertThrowsError(try CorpusReader(directory: dir + "/nope")) {
            XCTAssertTrue(($0 as! IdxError).message.contains("idx ingest"))
        }
        XCTAssertThrowsError(try CorpusReader(directory: dir)) {
            XCTAssertTrue(($0 as! IdxError).message.contains("manifest.json"))
        }
        let (_, out) = try ingest(IngestTestSupport.movies(3), shardDocs: 10, in: dir)
        let path = out + "/manifest.json"
        let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "\"format_version\" : 1", with: "\"format_version\" : 99")
        IngestTestSupport.write(text, to: path)
        XCTAssertThrowsError(try CorpusReader(directory: out)) {
            XCTAssertTrue(($0 as! IdxError).message.contains("newer"), "\($0)")
        }
    }
}
