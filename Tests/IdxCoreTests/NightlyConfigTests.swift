import Foundation
import XCTest
import IdxNightly

final class NightlyConfigTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    func testTOMLSubsetValues() throws {
        let doc = try TOMLDocument(parsing: """
        # comment
        top = "a # not a comment" # comment
        [one]
        s = "q\\"uote\\\\ \\t \\u00e9"
        lit = 'C:\\path'
        i = -1_000
        f = 1e-3
        g = 0.25
        b = true
        empty = []
        arr = [
            "x", # first
            'y',
        ]
        [two.three]
        n = 42
        """)
        XCTAssertEqual(doc.value("", "top"), .string("a # not a comment"))
        XCTAssertEqual(doc.value("one", "s"), .string("q\"uote\\ \t é"))
        XCTAssertEqual(doc.value("one", "lit"), .string("C:\\path"))
        XCTAssertEqual(doc.value("one", "i"), .integer(-1000))
        XCTAssertEqual(doc.value("one", "f"), .float(0.001))
        XCTAssertEqual(doc.value("one", "g"), .float(0.25))
        XCTAssertEqual(doc.value("one", "b"), .bool(true))
        XCTAssertEqual(doc.value("one", "empty"), .strings([]))
        XCTAssertEqual(doc.value("one", "arr"), .strings(["x", "y"]))
        XCTAssertEqual(doc.value("two.three", "n"), .integer(42))
        XCTAssertEqual(doc.location("one", "arr"), "<config>:11")
    }

    func testTOMLSubsetErrorsNameTheLine() {
        let cases: [(String, String)] = [
            ("a = 1\na = 2", ":2: `a` is set twice"),
            ("[s]\n[s]", ":2: section [s] appears twice"),
            ("a = \"open", ":1: the string is not closed"),
            ("a = [1, 2]", ":1: arrays may only hold strings"),
            ("a = {x = 1}", ":1: `{x` is not a value"),
            ("a = 1 2", ":1: unexpected text after the value"),
            ("a = [\"x\"", ":1: the array of `a` is not closed"),
            ("= 3", ":1: expected `key = value`"),
            ("a = 1__0", ":1: `1__0` is not a value"),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try TOMLDocument(parsing: text, source: "idx.toml"), text) { e in
                XCTAssertTrue("\(e)".hasPrefix("idx.toml"), "\(e)")
                XCTAssertTrue("\(e)".contains(expected), "\(text) → \(e)")
            }
        }
    }

    func testExampleConfigDocumentsEveryKeyWithItsDefault() throws {
        let path = Self.root + "/idx.example.toml"
        let doc = try TOMLDocument(contentsOfFile: path)
        for setting in NightlySettings.all {
            XCTAssertNotNil(doc.value(setting.section, setting.key), "idx.example.toml lacks \(setting.name)")
        }
        // The example holds the defaults.
        XCTAssertEqual(try NightlyConfig.load(path), NightlyConfig().resolved(against: Self.root))
    }

    func testConfigOverridesAndRejectsUnknownKeys() throws {
        let doc = try TOMLDocument(parsing: """
        [train]
        steps = 50
        procs = 2
        [gate]
        max_knn_drop = 0
        min_seed_ratio = 1.05
        [inbox]
        sources = ["a", "http://127.0.0.1:1/x.csv"]
        """, source: "idx.toml")
        let c = try NightlySettings.apply(doc, to: NightlyConfig())
        XCTAssertEqual(c.steps, 50)
        XCTAssertEqual(c.procs, 2)
        XCTAssertEqual(c.maxKnnDrop, 0)
        XCTAssertEqual(c.minSeedRatio, 1.05)
        XCTAssertEqual(c.inbox, ["a", "http://127.0.0.1:1/x.csv"])
        XCTAssertThrowsError(try NightlySettings.apply(TOMLDocument(parsing: "[train]\nstep = 5", source: "idx.toml"), to: c)) { e in
            XCTAssertTrue("\(e)".contains("idx.toml:2: unknown key `step`"), "\(e)")
        }
        XCTAssertThrowsError(try NightlySettings.apply(TOMLDocument(parsing: "[trian]\n", source: "idx.toml"), to: c)) { e in
            XCTAssertTrue("\(e)".contains("unknown section [trian]"), "\(e)")
        }
        XCTAssertThrowsError(try NightlySettings.apply(TOMLDocument(parsing: "[train]\nsteps = \"5\"", source: "idx.toml"), to: c)) { e in
            XCTAssertTrue("\(e)".contains("must be a whole number"), "\(e)")
        }
        XCTAssertThrowsError(try NightlySettings.apply(TOMLDocument(parsing: "[train]\nprocs = 0", source: "idx.toml"), to: c))
    }

    /// A flag goes through the same check as its key, and is refused in the same words.
    func testFlagsAreCheckedLikeKeys() throws {
        var c = NightlyConfig()
        try NightlySettings.set("--steps", .integer(7), in: &c)
        XCTAssertEqual(c.steps, 7)
        XCTAssertThrowsError(try NightlySettings.set("--procs", .integer(0), in: &c)) { e in
            XCTAssertEqual("\(e)", "--procs must be at least 1 (got 0).")
        }
        XCTAssertThrowsError(try NightlyConfig.apply(toml: "[train]\nprocs = 0", source: "idx.toml", to: c)) { e in
            XCTAssertEqual("\(e)", "idx.toml:2: `procs` must be at least 1 (got 0).")
        }
        XCTAssertThrowsError(try NightlySettings.set("--download-attempts", .integer(0), in: &c))
        XCTAssertThrowsError(try NightlySettings.set("--max-knn-drop", .number(.nan), in: &c)) { e in
            XCTAssertTrue("\(e)".contains("--max-knn-drop must be a finite number"), "\(e)")
        }
        try NightlySettings.set("--map-projection", .string("tsne"), in: &c)
        XCTAssertEqual(c.mapProjection, .tsne)
        try NightlySettings.set("--map-projection", .string("none"), in: &c)
        XCTAssertNil(c.mapProjection)
        XCTAssertThrowsError(try NightlySettings.set("--map-projection", .string("umap"), in: &c)) { e in
            XCTAssertTrue("\(e)".contains("--map-projection must be \"none\", \"pca\" or \"tsne\", not \"umap\""), "\(e)")
        }
        // one string stands for an array of one; a number is not a string
        c = try NightlyConfig.apply(toml: "[inbox]\nsources = \"in\"\n[gate]\nmin_seed_ratio = 2", source: "idx.toml", to: c)
        XCTAssertEqual(c.inbox, ["in"])
        XCTAssertEqual(c.minSeedRatio, 2)
        XCTAssertThrowsError(try NightlyConfig.apply(toml: "[paths]\ncorpus = 3", source: "idx.toml", to: c)) { e in
            XCTAssertTrue("\(e)".contains("idx.toml:2: `corpus` must be a string in quotes, not an integer"), "\(e)")
        }
        // every flag names one setting
        let flags = NightlySettings.all.compactMap(\.flag)
        XCTAssertEqual(Set(flags).count, flags.count)
    }
}
