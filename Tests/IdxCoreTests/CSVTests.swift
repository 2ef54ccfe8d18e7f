import XCTest
import IdxBase
@testable import IdxCorpus

final class CSVTests: XCTestCase {
    struct Row: Equatable { var line: Int; var fields: [String] }

    func parse(_ bytes: [UInt8], chunkSize: Int = 1 << 20) throws -> (rows: [Row], unterminated: [Int], hashed: Int) {
        let dir = IngestTestSupport.tempDir(self)
        let path = dir + "/t.csv"
        IngestTestSupport.write(bytes, to: path)
        var reader = CSVReader(path: path)
        reader.chunkSize = chunkSize
        var rows = [Row](), bad = [Int](), hashed = 0
        try reader.read(onBytes: { hashed += $0.count }, onRow: { r in
            rows.append(Row(line: r.line, fields: (0 ..< r.fieldCount).map { String(decoding: r.field($0), as: UTF8.self) }))
        }, onUnterminated: { bad.append($0) })
        return (rows, bad, hashed)
    }

    func testQuotedFieldsEmbeddedNewlinesDoubledQuotesAndCRLF() throws {
        let text = "a,b,c\r\n\"x, y\",\"say \"\"hi\"\"\",\"line1\r\nline2\nline3\"\r\n plain , ,\r\nlast,row,no newline"
        for chunk in [4, 5, 7, 1 << 20] {
            let (rows, bad, hashed) = try parse(Array(text.utf8), chunkSize: chunk)
            XCTAssertEqual(hashed, text.utf8.count)
            XCTAssertEqual(bad, [])
            XCTAssertEqual(rows, [
                Row(line: 1, fields: ["a", "b", "c"]),
                Row(line: 2, fields: ["x, y", "say \"hi\"", "line1\r\nline2\nline3"]),
                Row(line: 5, fields: [" plain ", " ", ""]),
                Row(line: 6, fields: ["last", "row", "no newline"]),
            ], "chunk size \(chunk)")
        }
    }

    func testBOMIsSkippedAndBlankLinesKeepLineNumbers() throws {
        let (rows, _, _) = try parse([0xEF, 0xBB, 0xBF] + Array("description,x\n\nfirst,1\n\n\nsecond,2\n".utf8), chunkSize: 4)
        XCTAssertEqual(rows, [Row(line: 1, fields: ["description", "x"]), Row(line: 3, fields: ["first", "1"]),
                              Row(line: 6, fields: ["second", "2"])])
    }

    func testRaggedRowsAreReportedWithTheirFieldCount() throws {
        let (rows, _, _) = try parse(Array("a,b\n1\n1,2,3\n\"q\",\"r\"\n".utf8))
        XCTAssertEqual(rows.map { $0.fields.count }, [2, 1, 3, 2])
        XCTAssertEqual(rows.map { $0.line }, [1, 2, 3, 4])
    }

    func testUnterminatedQuoteAtTheEndIsReported() throws {
        let (rows, bad, _) = try parse(Array("a,b\n1,2\n3,\"never closed\nmore\n".utf8))
        XCTAssertEqual(rows, [Row(line: 1, fields: ["a", "b"]), Row(line: 2, fields: ["1", "2"])])
        XCTAssertEqual(bad, [3])
    }

    func testOverlongRowIsAnErrorNotUnboundedMemory() throws {
        let dir = IngestTestSupport.tempDir(self)
        let path = dir + "/t.csv"
        IngestTestSupport.write("a,b\n1,2\n3,\"open quote\n" + String(repeating: "more text,\n", count: 5000), to: path)
        var reader = CSVReader(path: path)
        reader.maxRowBytes = 1 << 20
        reader.chunkSize = 4096
        var rows = 0
        XCTAssertNoThrow(try reader.read(onBytes: { _ in }, onRow: { _ in rows += 1 }, onUnterminated: { _ in }))
        reader.maxRowBytes = 10_000
        XCTAssertThrowsError(try reader.read(onBytes: { _ in }, onRow: { _ in }, onUnterminated: { _ in })) {
            let m = ($0 as! IdxError).message
            XCTAssertTrue(m.contains("t.csv:3:") && m.contains("unterminated quote"), m)
        }
    }

    func testUnreadableFileIsAnError() {
        XCTAssertThrowsError(try CSVReader(path: "/nonexistent/x.csv").read(onBytes: { _ in }, onRow: { _ in }, onUnterminated: { _ in })) {
            XCTAssertTrue(($0 as? IdxError)?.message.contains("/nonexistent/x.csv") ?? false)
        }
    }
}
