import XCTest
import IdxModel
#if canImport(FoundationXML)
import FoundationXML
@testable import IdxProjection
#endif

final class SVGTests: XCTestCase {
    final class Collector: NSObject, XMLParserDelegate {
        var elements = [String: Int]()
        var texts = [String]()
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) { elements[name, default: 0] += 1 }
        func parser(_ parser: XMLParser, foundCharacters string: String) { texts.append(string) }
    }

    func testSVGIsWellFormedWithLegendAndAxes() {
        // 14 groups: 12 coloured, the 2 rarest folded into "other".
        var groups = [String]()
        for g in 0 ..< 14 { for _ in 0 ..< (20 - g) { groups.append("Genre <\(g)> & co") } }
        let n = groups.count
        var rng = SplitMix64(state: 1)
        let x = (0 ..< n).map { _ in Float(rng.normal()) }, y = (0 ..< n).map { _ in Float(rng.normal()) }
        let plot = ScatterPlot(x: x, y: y, groups: groups, title: "PCA \"test\"",
                               xLabel: "PC1 (12.3% of variance)", yLabel: "PC2 (4.5% of variance)",
                               annotations: (0 ..< n).map { "p<\($0)>" })
        let svg = plot.svg()
        let parser = XMLParser(data: Data(svg.utf8))
        let c = Collector()
        parser.delegate = c
        XCTAssertTrue(parser.parse(), "XMLParser: \(String(describing: parser.parserError))")
        XCTAssertEqual(c.elements["svg"], 1)
        // n points + 13 legend markers.
        XCTAssertEqual(c.elements["circle"], n + 13)
        let text = c.texts.joined()
        XCTAssertTrue(text.contains("PC1 (12.3% of variance)"))
        XCTAssertTrue(text.contains("Genre <0> & co (20)"))
        XCTAssertTrue(text.contains("other (15)"))   // groups 12 and 13: 8 + 7 points
        XCTAssertFalse(text.contains("Genre <13>"))
        XCTAssertEqual(plot.legend().count, 13)
    }

    func testTicksAreNice() {
        XCTAssertEqual(ScatterPlot.ticks(0, 10), [0, 2, 4, 6, 8, 10])
        XCTAssertEqual(ScatterPlot.ticks(-0.03, 0.07), [-0.02, 0, 0.02, 0.04, 0.06].map { $0 }, accuracy: 1e-12)
    }
}

private func XCTAssertEqual(_ a: [Double], _ b: [Double], accuracy: Double, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, file: file, line: line)
    for (u, v) in zip(a, b) { XCTAssertEqual(u, v, accuracy: accuracy, file: file, line: line) }
}
