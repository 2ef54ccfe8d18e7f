import Foundation
import XCTest
import IdxBase
@testable import IdxCorpus

final class TokenizerTests: XCTestCase {
    func train(_ texts: [String], vocabSize: Int, minFrequency: Int = 0, lowercase: Bool = false) -> WordLevelTokenizer {
        var t = WordLevelTrainer(vocabSize: vocabSize, minFrequency: minFrequency, lowercase: lowercase)
        for s in texts { t.count(s) }
        return t.train()
    }

    func testOrderIsSpecialsThenCountThenBytes() {
        let tok = train(["b a c, a... b's z z y", "x"], vocabSize: 9)
        XCTAssertEqual((0 ..< 9).map { tok.token(Int32($0)) },
                       ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]", "a", "b", "z", "'"])
        XCTAssertEqual(tok.encode("b a q z"), [6, 5, 1, 7])
        // Upper case sorts before lower case (byte order), digits before both.
        let t2 = train(["b B 1 a A"], vocabSize: 100)
        XCTAssertEqual((5 ..< 10).map { t2.token(Int32($0)) }, ["1", "A", "B", "a", "b"])
    }

    func testPreTokensAreWordRunsOrPunctuationRuns() {
        var got = [String]()
        let s = Array("it's  end-to-end...ok?! foo_bar x2\t9".utf8)
        s.withUnsafeBufferPointer { b in
            PreTokenizer.forEach(b.baseAddress!, b.count) { got.append(String(decoding: b[$0 ..< $0 + $1], as: UTF8.self)) }
        }
        XCTAssertEqual(got, ["it", "'", "s", "end", "-", "to", "-", "end", "...", "ok", "?!", "foo_bar", "x2", "9"])
    }

    /// Hugging Face's WordLevelTrainer on the fixture texts (scripts/reference/ingest_tokenizer_fixture.py).
    func testMatchesHuggingFaceFixture() throws {
        struct Case: Decodable { var vocab_size: Int; var min_frequency: Int; var lowercase: Bool; var vocab: [String]; var ids: [[Int32]]; var tokenizer_json: String? }
        struct Fixture: Decodable { var texts: [String]; var cases: [Case] }
        let data = try Data(contentsOf: IngestTestSupport.fixture("tokenizer-reference.json"))
        let f = try JSONDecoder().decode(Fixture.self, from: data)
        XCTAssertEqual(f.cases.count, 8)
        XCTAssertEqual(f.cases.filter(\.lowercase).count, 2)
        for c in f.cases {
            let tok = train(f.texts, vocabSize: c.vocab_size, minFrequency: c.min_frequency, lowercase: c.lowercase)
            let label = "vocab_size \(c.vocab_size) min_frequency \(c.min_frequency) lowercase \(c.lowercase)"
            XCTAssertEqual((0 ..< tok.vocabSize).map { tok.token(Int32($0)) }, c.vocab, label)
            for (i, text) in f.texts.enumerated() {
                XCTAssertEqual([SpecialToken.bos] + tok.encode(text) + [SpecialToken.eos], c.ids[i], "\(label), text \(i)")
            }
            if let json = c.tokenizer_json {
                XCTAssertEqual(String(decoding: tok.json, as: UTF8.self), json, "tokenizer.json bytes, \(label)")
                // HF's own file reads back with the same normalizer and ids.
                let back = try WordLevelTokenizer(jsonBytes: Array(json.utf8), source: label)
                XCTAssertEqual(back.lowercase, c.lowercase)
                for text in f.texts { XCTAssertEqual(back.encode(text), tok.encode(text), label) }
            }
        }
    }

    func testJSONRoundTripKeepsIdsAndHash() throws {
        let tok = train(["the \"quoted\" word and a back\\slash and the end"], vocabSize: 50)
        let dir = IngestTestSupport.tempDir(self)
        try Data(tok.json).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
        let back = try WordLevelTokenizer(contentsOfFile: dir + "/tokenizer.json")
        XCTAssertEqual(back.vocabSize, tok.vocabSize)
        XCTAssertEqual(back.hash, tok.hash)
        XCTAssertEqual(back.hash, XXHash64.hex(XXHash64.hash(tok.json)))
        for s in ["the word and the end", "unknown words here", "\"quoted\""] { XCTAssertEqual(back.encode(s), tok.encode(s)) }
        XCTAssertEqual(back.encodeQuery("The (end) – of the word - ignored"), back.encode("The end  of the word"))
    }

    func testRejectsOtherModels() throws {
        let dir = IngestTestSupport.tempDir(self)
        IngestTestSupport.write("{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}", to: dir + "/t.json")
        XCTAssertThrowsError(try WordLevelTokenizer(contentsOfFile: dir + "/t.json")) {
            XCTAssertTrue(($0 as! IdxError).message.contains("WordLevel"))
        }
        XCTAssertThrowsError(try WordLevelTokenizer(contentsOfFile: dir + "/missing.json"))
    }

    func testVocabularyBeyond65536Ids() {
        // 70,000 distinct words: ids above UInt16.max must survive training and encoding.
        var text = ""
        text.reserveCapacity(70_000 * 8)
        for i in 0 ..< 70_000 { text += "w\(i) " }
        let tok = train([text, "w69999 w5"], vocabSize: 70_005)
        XCTAssertEqual(tok.vocabSize, 70_005)
        let ids = tok.encode("w69998 w5 w69999")
        XCTAssertTrue(ids.contains { $0 > 65_535 }, "\(ids)")
        XCTAssertEqual(ids.map { tok.token($0) }, ["w69998", "w5", "w69999"])
    }
}
