import Foundation
import XCTest
import IdxBase

/// CompactJSON writes what JSONSerialization writes (the format of `idx search --json`).
final class CompactJSONTests: XCTestCase {
    func foundation(_ v: Any) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: v, options: [.sortedKeys, .withoutEscapingSlashes]), as: UTF8.self)
    }

    func testSameBytesAsJSONSerialization() throws {
        let strings = ["", "plain", "quote \" and backslash \\ and slash / ", "tab\tnew\nline\rcr", "\u{0}\u{1}\u{8}\u{b}\u{c}\u{f}\u{10}\u{1f}\u{7f}",
                       "é ü 日本 🎬", "Schindler's List: 1993, \"drama\""]
        let doubles: [Double] = [0, -0.0, 1, -1, 0.5, 0.9398971199989319, 1e-05, 2.5e-12, 1e16, 1e22, 123456789.125, -3.75e-7,
                                 Double(Float(0.1)), 5.8, 100]
        let values: [Any] = strings + doubles.map { $0 as Any } + [Float(0.1), Float(2), Int(-7), Int64(9_000_000_000), true, false, NSNull(),
                                                                    [1, 2.5, "x"] as [Any], [Any]()]
        for v in values {
            XCTAssertEqual(String(decoding: try CompactJSON.data([v]), as: UTF8.self), try foundation([v]), "\(v)")
        }
        // Key order: numeric, case-insensitive (Foundation's comparator), nested objects and arrays.
        let object: [String: Any] = ["b": 1, "B2": "x", "a10": 2.5, "a9": NSNull(), "Zeta": [["y": 1, "x": [0.25, "s"]]], "alpha": true,
                                     "expandedGenres": "Sci-Fi, Drama", "bm25": 0.0, "id": Int64(38), "year": NSNull()]
        XCTAssertEqual(String(decoding: try CompactJSON.data(object), as: UTF8.self), try foundation(object))
        XCTAssertEqual(String(decoding: try CompactJSON.data([object, object]), as: UTF8.self), try foundation([object, object]))
        // An NSNumber (as JSONSerialization reads numbers) goes through Foundation's own writer.
        let parsed = try JSONSerialization.jsonObject(with: Data("[1, 2.5, true]".utf8))
        XCTAssertEqual(String(decoding: try CompactJSON.data(parsed), as: UTF8.self), try foundation(parsed))
        XCTAssertThrowsError(try CompactJSON.data([Double.nan]))
    }
}
