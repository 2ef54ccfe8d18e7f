import Foundation
import XCTest

/// Helpers shared by the ingest tests (temp folders, CSV files, the repo root).
enum IngestTestSupport {
    static var repoRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    static func fixture(_ name: String) -> URL {
        repoRoot.appendingPathComponent("Tests/IdxCoreTests/Fixtures/ingest/\(name)")
    }

    /// A fresh temporary folder, removed at the end of the test.
    static func tempDir(_ test: XCTestCase, _ name: String = #function) -> String {
        let safe = name.filter { $0.isLetter || $0.isNumber }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("idx-\(safe)-\(getpid())-\(UInt32.random(in: 0 ... .max))").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    static func write(_ text: String, to path: String) { write(Array(text.utf8), to: path) }
    static func write(_ bytes: [UInt8], to path: String) {
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    }

    static let header = "movie title - year,genre,expanded-genres,rating,description\n"

    /// A CSV of `n` made-up movies whose descriptions are long enough to be kept.
    static func movies(_ n: Int, offset: Int = 0) -> String {
        let verbs = ["finds", "loses", "chases", "builds", "hides", "paints"]
        let nouns = ["a dragon", "the city", "an old map", "her brother", "a robot", "the sea"]
        var s = header
        for i in offset ..< offset + n {
            let d = "Hero \(i) \(verbs[i % verbs.count]) \(nouns[(i / 3) % nouns.count]) and \(nouns[(i / 7) % nouns.count])."
            s += "\"Movie \(i), Part \(i % 3) - \(1950 + i % 70)\",Drama,\"Drama, War\",\(i % 10).\(i % 7),\"\(d)\"\n"
        }
        return s
    }
}

/// A value several test threads update, under a lock.
final class Locked<Value>: @unchecked Sendable {  // `value` only under `lock`
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func mutate(_ body: (inout Value) -> Void) { lock.lock(); body(&value); lock.unlock() }
    var current: Value { lock.lock(); defer { lock.unlock() }; return value }
}
