import CCsv
import XCTest
import IdxProjection

final class CSVExportTests: XCTestCase {
    /// Parses CSV with libcsv (strict mode), an independent RFC 4180 reader.
    func parse(_ text: String) -> [[String]] {
        final class Sink { var rows = [[String]](); var row = [String]() }
        let sink = Sink()
        var p = csv_parser()
        XCTAssertEqual(csv_init(&p, UInt8(CSV_STRICT | CSV_STRICT_FINI)), 0)
        let bytes = Array(text.utf8)
        let ctx = Unmanaged.passUnretained(sink).toOpaque()
        let onField: @convention(c) (UnsafeMutableRawPointer?, Int, UnsafeMutableRawPointer?) -> Void = { data, len, ctx in
            let s = Unmanaged<Sink>.fromOpaque(ctx!).takeUnretainedValue()
            let buf = UnsafeRawBufferPointer(start: data, count: len)
            s.row.append(String(decoding: buf, as: UTF8.self))
        }
        let onRow: @convention(c) (Int32, UnsafeMutableRawPointer?) -> Void = { _, ctx in
            let s = Unmanaged<Sink>.fromOpaque(ctx!).takeUnretainedValue()
            s.rows.append(s.row); s.row = []
        }
        let used = bytes.withUnsafeBytes { csv_parse(&p, $0.baseAddress, $0.count, onField, onRow, ctx) }
        XCTAssertEqual(used, bytes.count, "libcsv stopped early: \(String(cString: csv_strerror(csv_error(&p))))")
        csv_fini(&p, onField, onRow, ctx)
        csv_free(&p)
        return sink.rows
    }

    func testQuotingRoundTrips() {
        let rows = [
            ["1", "Plain", "2020", "Drama", "0.5", "-1.25"],
            ["2", "Comma, and \"quotes\"", "", "Sci-Fi", "1e-05", "3"],
            ["3", "Line\nbreak and\r\nCRLF", "1999", "Romance", "2", "2"],
            ["4", " leading space", "", "", "0", "0"],
            ["5", "Ünïcödé — “fancy” 映画", "2001", "Horror", "1", "1"],
        ]
        let text = CSVExport.table(header: ["id", "title", "year", "genre", "x", "y"], rows: rows)
        let back = parse(text)
        XCTAssertEqual(back.first, ["id", "title", "year", "genre", "x", "y"])
        XCTAssertEqual(Array(back.dropFirst()), rows)
        XCTAssertEqual(CSVExport.field("plain"), "plain")
        XCTAssertEqual(CSVExport.field("a\"b"), "\"a\"\"b\"")
    }

    func testNumbersRoundTrip() {
        for v: Float in [0, -0.5, 1e-7, 123456.79, -3.4028235e38, 0.1] {
            XCTAssertEqual(Float(CSVExport.number(v)), v)
        }
    }
}
