import Foundation
import XCTest
@testable import IdxCorpus

/// Bad input, category "CSV files and ingest options": every one an error naming the file
/// (and line or field), nothing written, no hang, no unbounded memory.
final class BadCSVInputTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = IngestTestSupport.tempDir(self) }

    func ingest(_ inputs: [String], _ configure: (inout Ingest.Options) -> Void = { _ in }) throws {
        var o = Ingest.Options(inputs: inputs, output: dir + "/out", vocabSize: 100)
        o.showProgress = false
        configure(&o)
        try Ingest.run(o)
    }

    func csv(_ name: String, _ text: String) -> String {
        IngestTestSupport.write(text, to: dir + "/" + name)
        return dir + "/" + name
    }

    func testEmptyFile() {
        let p = csv("empty.csv", "")
        assertRefused([dir], naming: ["empty.csv", "empty (0 bytes)"]) { try ingest([p]) }
    }

    func testFIFOIsReportedAsAFIFONotAsEmpty() {
        XCTAssertEqual(mkfifo(dir + "/pipe.csv", 0o644), 0)
        assertIdxRefuses(["ingest", dir + "/pipe.csv", "--out", dir + "/out"], watched: [dir], naming: ["pipe.csv", "FIFO"])
    }

    func testDevZeroIsReportedAsADevice() {
        assertIdxRefuses(["ingest", "/dev/zero", "--out", dir + "/out"], watched: [dir], naming: ["/dev/zero", "character device"])
    }

    func testFolderGivenAsCSV() throws {
        try FileManager.default.createDirectory(atPath: dir + "/x.csv", withIntermediateDirectories: false)
        assertRefused([dir], naming: ["x.csv", "is a folder"]) { try ingest([dir + "/x.csv"]) }
    }

    func testMissingFile() {
        assertRefused([dir], naming: ["nothere.csv", "no such CSV file"]) { try ingest([dir + "/nothere.csv"]) }
    }

    func testHTMLPage() {
        let p = csv("page.csv", "<!DOCTYPE html>\n<html><body>Not found</body></html>\n")
        assertRefused([dir], naming: ["page.csv", "no \"description\" column"]) { try ingest([p]) }
    }

    func testBinaryHeaderIsEscapedInTheMessage() {
        var bytes: [UInt8] = [0x1B, 0x5B, 0x32, 0x4A, 0x00, 0x07, 0x2C, 0x0D, 0xFF]  // ESC[2J NUL BEL , CR 0xFF
        bytes += Array("\nrow\n".utf8)
        IngestTestSupport.write(bytes, to: dir + "/bin.csv")
        assertRefused([dir], naming: ["bin.csv", "\\x1B", "no \"description\" column"]) { try ingest([dir + "/bin.csv"]) }
    }

    func testHeaderOfManyFieldsIsBounded() {
        // 200,000 empty fields (200 KB): the header counts against the row limits like every row.
        let p = csv("wide.csv", String(repeating: ",", count: 200_000) + "description\n")
        assertRefused([dir], naming: ["wide.csv:1", "more than 65536"]) { try ingest([p]) }
    }

    func testHeaderLongerThanTheRowLimit() {
        let p = csv("long.csv", String(repeating: "h", count: 300_000) + "\n")
        var reader = CSVReader(path: p)
        reader.maxRowBytes = 1 << 16
        reader.chunkSize = 4096
        assertRefused([dir], naming: ["long.csv:1", "longer than"]) {
            try reader.read(onBytes: { _ in }, onRow: { _ in }, onUnterminated: { _ in })
        }
    }

    func testNoHeaderRow() {
        let p = csv("blank.csv", "\n\n\n")
        assertRefused([dir], naming: ["blank.csv"]) { try ingest([p]) }
    }

    func testEveryDescriptionTooShort() {
        let p = csv("short.csv", IngestTestSupport.header + "\"A - 2000\",Drama,Drama,5.0,Too short.\n")
        assertRefused([dir], naming: ["short.csv", "no document survives"]) { try ingest([p]) }
    }

    func testUnterminatedQuoteSwallowsTheFile() {
        let p = csv("quote.csv", IngestTestSupport.header + "\"A - 2000\",Drama,Drama,5.0,\"never closed and long enough to keep\n")
        assertRefused([dir], naming: ["quote.csv", "no document survives"]) { try ingest([p]) }
    }

    func testFileOverTheSizeLimit() {
        let p = csv("big.csv", IngestTestSupport.movies(20))
        assertRefused([dir], naming: ["big.csv", "more than the limit of 100 bytes"]) { try ingest([p]) { $0.maxInputBytes = 100 } }
    }

    func testUnreadableFile() throws {
        let p = csv("locked.csv", IngestTestSupport.movies(5))
        chmod(p, 0)
        defer { chmod(p, 0o644) }
        if getuid() == 0 { throw XCTSkip("root reads a file of mode 000") }
        assertRefused([dir], naming: ["locked.csv", "cannot be read"]) { try ingest([p]) }
    }

    func testGarbageTokenizer() {
        let p = csv("m.csv", IngestTestSupport.movies(5))
        let t = csv("tokenizer.json", "{not json")
        assertRefused([dir + "/m.csv"], naming: ["tokenizer.json"]) { try ingest([p]) { $0.tokenizerPath = t } }
    }

    func testVocabularyTooSmall() {
        let p = csv("m.csv", IngestTestSupport.movies(5))
        assertRefused([dir], naming: ["--vocab-size"]) { try ingest([p]) { $0.vocabSize = 3 } }
    }

    func testNoShardDocuments() {
        let p = csv("m.csv", IngestTestSupport.movies(5))
        assertRefused([dir], naming: ["--shard-docs"]) { try ingest([p]) { $0.shardDocuments = 0 } }
    }

    func testPrecheckAgreesWithIngest() throws {
        XCTAssertEqual(try Ingest.precheck(csv("ok.csv", IngestTestSupport.movies(7)), maxBytes: nil), 7)
        let empty = csv("e.csv", "")
        assertRefused([dir], naming: ["e.csv", "empty"]) { _ = try Ingest.precheck(empty, maxBytes: nil) }
    }
}
