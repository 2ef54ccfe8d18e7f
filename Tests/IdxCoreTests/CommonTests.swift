import XCTest
import IdxBase

final class CommonTests: XCTestCase {
    func testXXHash64KnownVectors() {
        // Reference values from the xxhash C library (python-xxhash).
        XCTAssertEqual(XXHash64.hash([UInt8]()), 0xEF46_DB37_51D8_E999)
        XCTAssertEqual(XXHash64.hash(Array("a".utf8)), 0xD24E_C4F1_A98C_6E5B)
        XCTAssertEqual(XXHash64.hash(Array("abc".utf8)), 0x44BC_2CF5_AD77_0999)
        let long = Array("The quick brown fox jumps over the lazy dog, again and again and again.".utf8)
        XCTAssertEqual(XXHash64.hash(long), 0x4CF8_A242_630A_C3EE)
    }

    func testXXHash64StreamingEqualsOneShot() {
        var bytes = [UInt8]()
        var state: UInt64 = 12345
        for _ in 0 ..< 1000 { state = state &* 6364136223846793005 &+ 1; bytes.append(UInt8(truncatingIfNeeded: state >> 33)) }
        let whole = XXHash64.hash(bytes)
        for split in [1, 7, 31, 32, 33, 100, 999] {
            var x = XXHash64()
            var i = 0
            while i < bytes.count {
                let j = min(bytes.count, i + split)
                bytes[i ..< j].withUnsafeBytes { x.update($0) }
                i = j
            }
            XCTAssertEqual(x.finalize(), whole, "split \(split)")
        }
    }

    func testPublishDirectoryReplacesAtomically() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("idx-atomic-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/out", withIntermediateDirectories: true)
        try Data("old".utf8).write(to: URL(fileURLWithPath: root + "/out/a"))
        try FileManager.default.createDirectory(atPath: root + "/staged", withIntermediateDirectories: true)
        try Data("new".utf8).write(to: URL(fileURLWithPath: root + "/staged/a"))
        try AtomicFile.publishDirectory(root + "/staged", at: root + "/out")
        XCTAssertEqual(try String(contentsOfFile: root + "/out/a", encoding: .utf8), "new")
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/staged"))
    }
}
