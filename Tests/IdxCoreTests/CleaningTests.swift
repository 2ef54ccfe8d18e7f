import XCTest
@testable import IdxCorpus

final class CleaningTests: XCTestCase {
    func testKeepsOnlyTheAllowedCharacters() {
        XCTAssertEqual(Cleaning.clean("Hello, World! It's 3:30; ok? yes. (really) [no] {x} #1 @home"),
                       "Hello, World! It's 3:30; ok? yes. really no x 1 home")
        XCTAssertEqual(Cleaning.cleanKeepingShort("a\"b\\c/d_e+f=g&h%i*j<k>l|m~n`o^p$q"), "abcdefghijklmnopq")
        XCTAssertEqual(Cleaning.cleanKeepingShort("tab\there\nnew\r\nline"), "tabherenewline")
    }

    func testDropsNonASCII() {
        XCTAssertEqual(Cleaning.cleanKeepingShort("Café – naïve “quotes” 東京 emoji 🎬 end"), "Caf  nave quotes  emoji  end")
    }

    func testCutsAtTheFirstSpacedDash() {
        XCTAssertEqual(Cleaning.clean("A long enough story of a man - and then more - and more"), "A long enough story of a man")
        // No spaces around the dash: not a cut.
        XCTAssertEqual(Cleaning.clean("A well-known story -of a man- who-knows"), "A well-known story -of a man- who-knows")
        // The cut is searched after filtering: "(-" loses its parenthesis and becomes " - ".
        XCTAssertEqual(Cleaning.cleanKeepingShort("A long enough story (- of a man"), "A long enough story")
        // An en dash is deleted, it is not a cut.
        XCTAssertEqual(Cleaning.clean("A long enough story – of a man"), "A long enough story  of a man")
        // Double spaces around the dash: " - " still occurs.
        XCTAssertEqual(Cleaning.cleanKeepingShort("A long enough story  -  of a man"), "A long enough story ")
    }

    func testLengthRuleDropsTwentyOrFewer() {
        XCTAssertNil(Cleaning.clean(""))
        XCTAssertNil(Cleaning.clean(String(repeating: "a", count: 20)))
        XCTAssertEqual(Cleaning.clean(String(repeating: "a", count: 21)), String(repeating: "a", count: 21))
        // Counted after cleaning: 21 raw characters of which one is deleted.
        XCTAssertNil(Cleaning.clean(String(repeating: "a", count: 20) + "é"))
        // Counted after the cut.
        XCTAssertNil(Cleaning.clean("Short text - followed by a long tail that is cut"))
        // Spaces are not stripped and count.
        XCTAssertEqual(Cleaning.clean("   abcdefghijklmnopqr"), "   abcdefghijklmnopqr")
        XCTAssertEqual(Cleaning.cleanKeepingShort("Hi - there"), "Hi")
    }

    func testBytePathEqualsStringPathAndSurvivesInvalidUTF8() {
        var bytes: [UInt8] = Array("An \u{00}odd\u{7F} story".utf8) + [0xFF, 0xC3, 0x28, 0xE2, 0x82] + Array(" of bytes - tail".utf8)
        let n = bytes.count
        let (len, cut) = bytes.withUnsafeMutableBufferPointer { Cleaning.cleanBytes($0.baseAddress!, n, into: $0.baseAddress!) }
        XCTAssertTrue(cut)
        XCTAssertEqual(String(decoding: bytes[..<len], as: UTF8.self), "An odd story of bytes")
        XCTAssertEqual(Cleaning.clean("An odd story of bytes - tail"), "An odd story of bytes")
    }
}
