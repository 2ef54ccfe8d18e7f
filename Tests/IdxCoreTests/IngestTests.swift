import Foundation
import XCTest
import IdxBase
@testable import IdxCorpus

final class IngestTests: XCTestCase {
    func options(_ inputs: [String], _ out: String, shardDocs: Int = 50_000) -> Ingest.Options {
        .init(inputs: inputs, output: out, vocabSize: 60, shardDocuments: shardDocs, showProgress: false)
    }

    func testInterruptedIngestLeavesThePreviousOutputAndNoTempFolder() throws {
        let dir = IngestTestSupport.tempDir(self)
        IngestTestSupport.write(IngestTestSupport.movies(4), to: dir + "/old.csv")
        IngestTestSupport.write(IngestTestSupport.movies(30, offset: 100), to: dir + "/new.csv")
        let out = dir + "/corpora/movies"
        try Ingest.run(options([dir + "/old.csv"], out))
        let before = try Data(contentsOf: URL(fileURLWithPath: out + "/manifest.json"))
        var o = options([dir + "/new.csv"], out, shardDocs: 5)
        o.failAfterTokenShards = 2
        XCTAssertThrowsError(try Ingest.run(o)) { XCTAssertTrue(($0 as! IdxError).message.contains("injected")) }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + "/manifest.json")), before)
        XCTAssertEqual(try CorpusReader(directory: out).documentCount, 4)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/corpora"), ["movies"])
        // The same without a previous output: nothing appears at all.
        o.output = dir + "/corpora/fresh"
        XCTAssertThrowsError(try Ingest.run(o))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/corpora"), ["movies"])
        // A successful run replaces it.
        o.failAfterTokenShards = nil
        o.output = out
        try Ingest.run(o)
        XCTAssertEqual(try CorpusReader(directory: out).documentCount, 30)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/corpora").sorted(), ["movies"])
    }

    func testStaleStagingFromAKilledRunIsRemoved() throws {
        let dir = IngestTestSupport.tempDir(self)
        IngestTestSupport.write(IngestTestSupport.movies(3), to: dir + "/a.csv")
        // pid 2^22+1 is above Linux's pid_max default, so no such process.
        let stale = dir + "/.out.tmp-4194305-7"
        try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: true)
        try Ingest.run(options([dir + "/a.csv"], dir + "/out"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale))
    }

    func testBadInputs() throws {
        let dir = IngestTestSupport.tempDir(self)
        IngestTestSupport.write("title,genre,plot\nA,B,C\n", to: dir + "/nodesc.csv")
        XCTAssertThrowsError(try Ingest.run(options([dir + "/nodesc.csv"], dir + "/o"))) {
            let m = ($0 as! IdxError).message
            XCTAssertTrue(m.contains("nodesc.csv") && m.contains("description") && m.contains("\"title\", \"genre\", \"plot\""), m)
        }
        IngestTestSupport.write("", to: dir + "/empty.csv")
        XCTAssertThrowsError(try Ingest.run(options([dir + "/empty.csv"], dir + "/o"))) {
            XCTAssertTrue(($0 as! IdxError).message.contains("empty"))
        }
        XCTAssertThrowsError(try Ingest.run(options([dir + "/missing.csv"], dir + "/o"))) {
            XCTAssertTrue(($0 as! IdxError).message.contains("missing.csv"))
        }
        IngestTestSupport.write("description\nshort\n", to: dir + "/short.csv")
        XCTAssertThrowsError(try Ingest.run(options([dir + "/short.csv"], dir + "/o"))) {
            XCTAssertTrue(($0 as! IdxError).message.contains("no document"))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/o"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".") }, [])
    }

    func testMalformedRowsAreSkippedAndReported() throws {
        let dir = IngestTestSupport.tempDir(self)
        var csv = IngestTestSupport.movies(3)
        csv += "Too few,fields\n"
        csv += "A - 2001,Drama,Drama,5.5,\"A perfectly fine description of a film\",extra\n"
        csv += "Tricky - 1999,Drama,\"Drama, War\",not a number,\"Multi\nline \"\"quoted\"\" caf\u{e9} description\"\n"
        csv += "Bad bytes,Drama,Drama,,"
        var bytes = Array(csv.utf8) + Array("Invalid ".utf8) + [0xFF, 0xFE] + Array(" UTF-8 inside the description\n".utf8)
        bytes += Array("Open - 2000,Drama,Drama,1,\"never closed and long enough\n".utf8)
        IngestTestSupport.write(bytes, to: dir + "/m.csv")
        var warnings = [String]()
        let s = try Ingest.run(options([dir + "/m.csv"], dir + "/o")) { warnings.append($0) }
        XCTAssertEqual(s.rowsRead, 8)
        XCTAssertEqual(s.documents, 5)
        XCTAssertEqual(s.skippedRows, 3)
        XCTAssertEqual(warnings.count, 3)
        XCTAssertTrue(warnings[0].hasPrefix(dir + "/m.csv:5:") && warnings[0].contains("2 fields"), warnings[0])
        XCTAssertTrue(warnings[1].hasPrefix(dir + "/m.csv:6:") && warnings[1].contains("6 fields"), warnings[1])
        XCTAssertTrue(warnings[2].hasPrefix(dir + "/m.csv:10:") && warnings[2].contains("never closes"), warnings[2])
        let meta = try CorpusReader(directory: dir + "/o").readMetadata()
        XCTAssertEqual(meta[3].description, "Multiline quoted caf description")
        XCTAssertEqual(meta[3].title, "Tricky")
        XCTAssertEqual(meta[3].year, 1999)
        XCTAssertNil(meta[3].rating)
        XCTAssertEqual(meta[3].sourceRow, 6)
        XCTAssertEqual(meta[4].description, "Invalid  UTF-8 inside the description")
        XCTAssertEqual(meta[4].title, "Bad bytes")
        XCTAssertNil(meta[4].year)
        XCTAssertNil(meta[4].rating)
    }

    func testReusedTokenizerKeepsTheVocabulary() throws {
        let dir = IngestTestSupport.tempDir(self)
        IngestTestSupport.write(IngestTestSupport.movies(10), to: dir + "/a.csv")
        IngestTestSupport.write(IngestTestSupport.header + "T,G,G,1,\"Zebras and unicorns finds the dragon quickly\"\n", to: dir + "/b.csv")
        try Ingest.run(options([dir + "/a.csv"], dir + "/a"))
        var o = options([dir + "/b.csv"], dir + "/b")
        o.tokenizerPath = dir + "/a/tokenizer.json"
        let s = try Ingest.run(o)
        let a = try CorpusReader(directory: dir + "/a"), b = try CorpusReader(directory: dir + "/b")
        XCTAssertEqual(a.tokenizerHash, b.tokenizerHash)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/a/tokenizer.json")),
                       try Data(contentsOf: URL(fileURLWithPath: dir + "/b/tokenizer.json")))
        XCTAssertEqual(s.unknownTokens, 3)  // Zebras, unicorns, quickly
        let tok = try b.tokenizer()
        XCTAssertEqual(try b.readTokens().document(0).map { tok.token($0) },
                       ["[UNK]", "and", "[UNK]", "finds", "the", "dragon", "[UNK]"])
    }

    /// With titles in the text, a document's tokens are its title's, ". ", then its description's;
    /// the length rule and the stored description still read the description alone.
    func testTitlesInTextPrefixTheTokensButNotTheMetadata() throws {
        let dir = IngestTestSupport.tempDir(self)
        IngestTestSupport.write(IngestTestSupport.header
            + "Star Wars - A New Hope - 1977,Sci-Fi,Sci-Fi,8.6,\"Luke joins the rebels against the Empire - written by someone\"\n"
            + "A Very Long Title Indeed For A Film - 1990,Drama,Drama,5,\"Too short.\"\n"
            + "Untitled,Drama,Drama,5,\"A film with no year in its title field\"\n", to: dir + "/t.csv")
        var o = options([dir + "/t.csv"], dir + "/titled")
        o.titlesInText = true
        let s = try Ingest.run(o)
        XCTAssertEqual(s.documents, 2)          // the second row's description is 10 characters: dropped, title or not
        XCTAssertEqual(s.cutAtDash, 1)
        let r = try CorpusReader(directory: dir + "/titled")
        XCTAssertTrue(r.titlesInText)
        let tok = try r.tokenizer(), tokens = try r.readTokens(), meta = try r.readMetadata()
        XCTAssertEqual(tokens.document(0).map { tok.token($0) },  // lower-cased: ingest's default --case lower
                       ["star", "wars", "a", "new", "hope", ".", "luke", "joins", "the", "rebels", "against", "the", "empire"])
        XCTAssertEqual(tokens.document(1).map { tok.token($0) }.prefix(3), ["untitled", ".", "a"])
        XCTAssertEqual(meta[0].title, "Star Wars - A New Hope")
        XCTAssertEqual(meta[0].year, 1977)
        XCTAssertEqual(meta[0].description, "Luke joins the rebels against the Empire")
        // Without: the description alone, and older manifests (no field) read the same way.
        try Ingest.run(options([dir + "/t.csv"], dir + "/plain"))
        let plain = try CorpusReader(directory: dir + "/plain")
        XCTAssertFalse(plain.titlesInText)
        XCTAssertEqual(try plain.readTokens().document(0).count, 7)
        XCTAssertFalse(try String(contentsOfFile: dir + "/plain/manifest.json", encoding: .utf8).contains("titles"))
    }

    func testSeveralInputsAndManifestSources() throws {
        let dir = IngestTestSupport.tempDir(self)
        let crlf = IngestTestSupport.movies(4, offset: 50).replacingOccurrences(of: "\n", with: "\r\n")
        IngestTestSupport.write([0xEF, 0xBB, 0xBF] + Array(crlf.utf8), to: dir + "/bom.csv")
        IngestTestSupport.write(IngestTestSupport.movies(3), to: dir + "/plain.csv")
        let s = try Ingest.run(options([dir + "/bom.csv", dir + "/plain.csv"], dir + "/o", shardDocs: 2))
        XCTAssertEqual(s.documents, 7)
        let r = try CorpusReader(directory: dir + "/o")
        let m = try r.readMetadata()
        XCTAssertEqual(m.map { $0.sourceRow }, [1, 2, 3, 4, 1, 2, 3])
        XCTAssertEqual(m[0].title, "Movie 50, Part 2")
        XCTAssertEqual(r.manifest.sources.map { $0.documents }, [4, 3])
        let (h, size) = try XXHash64.hashFile(at: dir + "/bom.csv")
        XCTAssertEqual(r.manifest.sources[0].xxh64, XXHash64.hex(h))
        XCTAssertEqual(r.manifest.sources[0].size, Int(size))
        XCTAssertEqual(r.manifest.shards.count, 4)
    }

    /// The real corpus (never committed): 37,285 rows survive the cleaning, 32,282 films once
    /// the 5,003 rows that repeat a film (another genre file's copy) are merged.
    func testRealCorpusKeeps37285RowsAnd32282Films() throws {
        let csv = IngestTestSupport.repoRoot.appendingPathComponent("../shared/corpora/imdb-genres/train.csv").standardized.path
        guard FileManager.default.fileExists(atPath: csv) else {
            throw XCTSkip("needs ../shared/corpora/imdb-genres/train.csv (the real corpus) beside the repository")
        }
        let dir = IngestTestSupport.tempDir(self)
        let s = try Ingest.run(.init(inputs: [csv], output: dir + "/train", showProgress: false))
        XCTAssertEqual(s.rowsRead, 37_527)
        XCTAssertEqual(s.documents, 32_282)
        XCTAssertEqual(s.duplicateRows, 5_003)
        XCTAssertEqual(s.skippedRows, 0)
        XCTAssertEqual(s.vocabSize, Ingest.defaultVocabSize)
        let r = try CorpusReader(directory: dir + "/train")
        XCTAssertEqual(try r.readTokens().count, 32_282)
        XCTAssertEqual(try r.readMetadata().count, 32_282)
        var rows = Ingest.Options(inputs: [csv], output: dir + "/rows", showProgress: false)
        rows.deduplicate = false
        XCTAssertEqual(try Ingest.run(rows).documents, 37_285)
    }

    /// A film listed in two genre files (same title, year and description) is one document
    /// carrying both genres; another film with the same title but another year stays.
    func testFilmsListedTwiceBecomeOneDocumentWithAllTheirGenres() throws {
        let dir = IngestTestSupport.tempDir(self)
        let rows = IngestTestSupport.header
            + "Alien Robot - 2001,Sci-Fi,\"Sci-Fi, Action\",7.1,An alien robot crash-lands on a quiet desert planet.\n"
            + "Lonely Hearts - 1999,Romance,Romance,6.0,Two strangers meet on a night train to Vienna.\n"
            + "Alien Robot - 2001,Action,\"Sci-Fi, Action\",7.1,An alien robot crash-lands on a quiet desert planet.\n"
            + "Alien Robot - 2001,Family,\"Sci-Fi, Action\",7.1,An alien robot crash-lands on a quiet desert planet.\n"
            + "Alien Robot - 2019,Sci-Fi,Sci-Fi,5.5,An alien robot crash-lands on a quiet desert planet.\n"
        IngestTestSupport.write(rows, to: dir + "/a.csv")
        IngestTestSupport.write(IngestTestSupport.header
            + "Lonely Hearts - 1999,Drama,Romance,6.0,Two strangers meet on a night train to Vienna.\n", to: dir + "/b.csv")
        let s = try Ingest.run(options([dir + "/a.csv", dir + "/b.csv"], dir + "/out"))
        XCTAssertEqual(s.rowsRead, 6)
        XCTAssertEqual(s.duplicateRows, 3)
        XCTAssertEqual(s.documents, 3)
        XCTAssertTrue(s.line.contains("3 repeating a film already kept"))
        let meta = try CorpusReader(directory: dir + "/out").readMetadata()
        XCTAssertEqual(meta.map(\.title), ["Alien Robot", "Lonely Hearts", "Alien Robot"])
        XCTAssertEqual(meta.map(\.year), [2001, 1999, 2019])
        XCTAssertEqual(meta.map(\.genre), ["Sci-Fi, Action, Family", "Romance, Drama", "Sci-Fi"])
        XCTAssertEqual(meta.map(\.expandedGenres), ["Sci-Fi, Action, Family", "Romance, Drama", "Sci-Fi"])
        XCTAssertEqual(meta.map(\.sourceRow), [1, 2, 5])
        XCTAssertTrue(Genres.holds(meta[0].genre, genre: "family") && !Genres.holds(meta[0].genre, genre: "Romance"))
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/out/manifest.json"))) as! [String: Any]
        XCTAssertEqual((manifest["stats"] as! [String: Any])["duplicate_rows"] as? Int, 3)

        var keep = options([dir + "/a.csv", dir + "/b.csv"], dir + "/all")
        keep.deduplicate = false
        let all = try Ingest.run(keep)
        XCTAssertEqual(all.documents, 6)
        XCTAssertEqual(all.duplicateRows, 0)
        XCTAssertEqual(try CorpusReader(directory: dir + "/all").readMetadata().map(\.genre),
                       ["Sci-Fi", "Romance", "Action", "Family", "Sci-Fi", "Drama"])
    }
}
