import Foundation
import XCTest
import IdxBase
import IdxLexical
import IdxModel
import IdxStore
@testable import IdxCorpus

/// Bad input, categories "corpus", "index" and "model": files that lie, most with valid
/// checksums (damaged, then re-checksummed), must give an error naming the file and field,
/// never a crash, a read outside the folder, or a silent wrong answer.
final class BadStoredFileTests: XCTestCase {
    var dir = ""
    var f: BadInput.Fixture { BadInput.fixture }
    override func setUpWithError() throws { dir = IngestTestSupport.tempDir(self) }

    // MARK: helpers

    func editJSON(_ path: String, _ edit: (inout [String: Any]) -> Void) {
        var obj = try! JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        edit(&obj)
        try! JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: path))
    }

    func corpusCopy() -> String { BadInput.copy(f.corpus, to: dir + "/corpus") }

    /// Rewrites shard 0's token file with `raw` (uncompressed), re-checksummed in the manifest.
    func replaceTokenShard(_ corpus: String, raw: [UInt8]) {
        let name = "tokens-00000.bin.zst"
        let packed = Zstd.compress(raw, level: 1)
        try! Data(packed).write(to: URL(fileURLWithPath: corpus + "/" + name))
        editJSON(corpus + "/manifest.json") { m in
            var shards = m["shards"] as! [[String: Any]]
            shards[0]["tokens_xxh64"] = XXHash64.hex(XXHash64.hash(packed))
            shards[0]["tokens_bytes"] = packed.count
            m["shards"] = shards
        }
    }

    func tokenShard(_ corpus: String) -> [UInt8] {
        try! Zstd.decompress([UInt8](Data(contentsOf: URL(fileURLWithPath: corpus + "/tokens-00000.bin.zst"))), name: "t", remedy: "")
    }

    func readTokens(_ corpus: String) throws { _ = try CorpusReader(directory: corpus).readTokens() }

    // MARK: corpus

    func testTokenIdAboveTheVocabulary() {
        let c = corpusCopy()
        var raw = tokenShard(c)
        let docs = Int(TokenShard.readLE(raw, 16))
        let at = TokenShard.headerBytes + 8 * (docs + 1)
        raw[at] = 0xFF; raw[at + 1] = 0xFF  // id 65535 in a 200-word vocabulary
        replaceTokenShard(c, raw: raw)
        assertRefused([c], naming: ["tokens-00000.bin.zst", "65535", "outside the vocabulary"]) { try readTokens(c) }
    }

    func testNegativeTokenId() {
        let c = corpusCopy()
        let corpus = try! CorpusReader(directory: f.corpus).readTokens()
        var ids = corpus.tokens
        ids[3] = -5
        replaceTokenShard(c, raw: TokenShard.encode(ids: ids, offsets: corpus.offsets, idBytes: 4))
        assertRefused([c], naming: ["tokens-00000.bin.zst", "-5"]) { try readTokens(c) }
    }

    func testTokenIdsAgainstALyingManifestVocabulary() {
        let c = corpusCopy()
        editJSON(c + "/manifest.json") { $0["vocab_size"] = 6 }
        assertRefused([c], naming: ["outside the vocabulary (0..<6)"]) { try readTokens(c) }
    }

    func testModelRefusesIdsPastItsEmbeddingTable() throws {
        let model = try EncoderModel.load(directory: f.model)
        var corpus = try CorpusReader(directory: f.corpus).readTokens()
        corpus.tokens[0] = Int32(model.config.vocabSize + 10)
        assertRefused([], naming: ["outside the vocabulary of", "\(model.config.vocabSize) entries"]) {
            try model.checkVocabulary(corpus, source: "corpus")
        }
    }

    func testShardOffsetsOutOfOrder() {
        let c = corpusCopy()
        var raw = tokenShard(c)
        raw.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(5).littleEndian, toByteOffset: TokenShard.headerBytes + 16, as: UInt64.self) }
        raw.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(2).littleEndian, toByteOffset: TokenShard.headerBytes + 24, as: UInt64.self) }
        replaceTokenShard(c, raw: raw)
        assertRefused([c], naming: ["tokens-00000.bin.zst", "out of order"]) { try readTokens(c) }
    }

    func testShardCountsOfTwoToTheSixtyThree() {
        let c = corpusCopy()
        var raw = tokenShard(c)
        raw.withUnsafeMutableBytes { $0.storeBytes(of: (UInt64(1) << 63).littleEndian, toByteOffset: 16, as: UInt64.self) }
        replaceTokenShard(c, raw: raw)
        assertRefused([c], naming: ["tokens-00000.bin.zst", "9223372036854775808 documents"]) { try readTokens(c) }
    }

    func testShardOffsetPastItsTokens() {
        let c = corpusCopy()
        var raw = tokenShard(c)
        raw.withUnsafeMutableBytes { $0.storeBytes(of: UInt64.max.littleEndian, toByteOffset: TokenShard.headerBytes + 8, as: UInt64.self) }
        replaceTokenShard(c, raw: raw)
        assertRefused([c], naming: ["tokens-00000.bin.zst", "past its"]) { try readTokens(c) }
    }

    func testManifestFileNameLeavingTheFolder() {
        let c = corpusCopy()
        editJSON(c + "/manifest.json") { m in
            var shards = m["shards"] as! [[String: Any]]
            shards[0]["tokens_file"] = "../../etc/passwd"
            m["shards"] = shards
        }
        assertRefused([c], naming: ["manifest.json", "../../etc/passwd", "not a file name inside"]) { _ = try CorpusReader(directory: c) }
    }

    func testManifestShardListedTwice() {
        let c = corpusCopy()
        editJSON(c + "/manifest.json") { m in
            var shards = m["shards"] as! [[String: Any]]
            shards[0]["metadata_file"] = shards[0]["tokens_file"]
            m["shards"] = shards
        }
        assertRefused([c], naming: ["listed twice"]) { _ = try CorpusReader(directory: c) }
    }

    func testManifestNegativeDocuments() {
        let c = corpusCopy()
        editJSON(c + "/manifest.json") { $0["documents"] = -1 }
        assertRefused([c], naming: ["manifest.json", "documents -1"]) { _ = try CorpusReader(directory: c) }
    }

    func testManifestTokensOfAPetabyte() {
        let c = corpusCopy()
        editJSON(c + "/manifest.json") { $0["tokens"] = 1_000_000_000_000_000 }
        assertRefused([c], naming: ["manifest.json", "tokens 1000000000000000"]) { _ = try CorpusReader(directory: c) }
    }

    func testManifestNotJSON() {
        let c = corpusCopy()
        IngestTestSupport.write("\u{1B}[31mnot json", to: c + "/manifest.json")
        assertRefused([c], naming: ["manifest.json", "not an idx corpus manifest"]) { _ = try CorpusReader(directory: c) }
    }

    func testShardThatIsAFIFO() {
        let c = corpusCopy()
        try! FileManager.default.removeItem(atPath: c + "/tokens-00000.bin.zst")
        XCTAssertEqual(mkfifo(c + "/tokens-00000.bin.zst", 0o644), 0)
        assertRefused([c], naming: ["tokens-00000.bin.zst", "FIFO"]) { try readTokens(c) }
    }

    func testZstdFrameClaimingATerabyte() {
        // A frame header with a content size of 2^40: refused before the allocation.
        // Magic, then a frame header descriptor of an 8-byte content size and a single segment.
        let frame: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0xE0] + withUnsafeBytes(of: UInt64(1 << 40).littleEndian, Array.init) + [0x01, 0x00, 0x00]
        assertRefused([], naming: ["frame.zst", "claims 1099511627776 bytes"]) { _ = try Zstd.decompress(frame, name: "frame.zst", remedy: "x", limit: 1 << 20) }
    }

    // MARK: index

    func indexCopy() -> String { BadInput.copy(f.index, to: dir + "/index") }
    var manifestPath: String { dir + "/index/gen-000001/manifest.json" }
    func openIndex(_ i: String) throws { _ = try VectorIndexReader(directory: i) }

    func testIndexSegmentListedTwice() {
        let i = indexCopy()
        editJSON(manifestPath) { m in
            let s = m["segments"] as! [[String: Any]]
            m["segments"] = s + s
            m["count"] = (m["count"] as! Int) * 2
        }
        assertRefused([i], naming: ["manifest.json", "listed twice"]) { try openIndex(i) }
    }

    func testIndexSegmentPathLeavingTheFolder() {
        let i = indexCopy()
        editJSON(manifestPath) { m in
            var s = m["segments"] as! [[String: Any]]
            s[0]["file"] = "segments/../../../etc/passwd.idxseg"
            m["segments"] = s
        }
        assertRefused([i], naming: ["manifest.json", "../../../etc/passwd.idxseg"]) { try openIndex(i) }
    }

    func testIndexSegmentAbsolutePath() {
        let i = indexCopy()
        editJSON(manifestPath) { m in
            var s = m["segments"] as! [[String: Any]]
            s[0]["file"] = "/etc/passwd"
            m["segments"] = s
        }
        assertRefused([i], naming: ["/etc/passwd", "not a file segments/"]) { try openIndex(i) }
    }

    func testIndexLexicalPathLeavingTheFolder() {
        let i = indexCopy()
        editJSON(manifestPath) { m in
            var s = m["segments"] as! [[String: Any]]
            var l = s[0]["lexical"] as! [String: Any]
            l["file"] = "segments/../x.idxlex"
            s[0]["lexical"] = l
            m["segments"] = s
        }
        assertRefused([i], naming: ["segments/../x.idxlex"]) { try openIndex(i) }
    }

    func testStandardizationOfTheWrongLength() {
        let i = indexCopy()
        editJSON(manifestPath) { m in
            var st = m["standardization"] as! [String: Any]
            st["std"] = [1.0, 2.0]
            m["standardization"] = st
        }
        assertRefused([i], naming: ["standardization", "2 deviations for dimension 8"]) { try openIndex(i) }
    }

    func testStandardizationAllZeros() {
        let i = indexCopy()
        editJSON(manifestPath) { m in
            var st = m["standardization"] as! [String: Any]
            st["std"] = [Double](repeating: 0, count: 8)
            m["standardization"] = st
        }
        assertRefused([i], naming: ["standardization", "not a positive number"]) { try openIndex(i) }
    }

    func testIndexCountDisagreesWithSegments() {
        let i = indexCopy()
        editJSON(manifestPath) { $0["count"] = 7 }
        assertRefused([i], naming: ["count 7"]) { try openIndex(i) }
    }

    func testIndexDimensionOfAMillion() {
        let i = indexCopy()
        editJSON(manifestPath) { $0["dimension"] = 1_000_000 }
        assertRefused([i], naming: ["dimension 1000000"]) { try openIndex(i) }
    }

    func testCurrentHoldingBinaryIsEscaped() {
        let i = indexCopy()
        IngestTestSupport.write([0x1B, 0x5B, 0x48, 0x00, 0x67, 0x65, 0x6E], to: i + "/CURRENT")
        assertRefused([i], naming: ["CURRENT", "\\x1B"]) { try openIndex(i) }
    }

    func testCurrentOfAMegabyteIsNotEchoed() {
        let i = indexCopy()
        IngestTestSupport.write(String(repeating: "gen-", count: 250_000), to: i + "/CURRENT")
        assertRefused([i], naming: ["CURRENT", "longer than 4 KiB"]) { try openIndex(i) }
    }

    func testCurrentLinkedToDevZero() throws {
        let i = indexCopy()
        try FileManager.default.removeItem(atPath: i + "/CURRENT")
        try FileManager.default.createSymbolicLink(atPath: i + "/CURRENT", withDestinationPath: "/dev/zero")
        assertRefused([i], naming: ["CURRENT", "/dev/zero"]) { try openIndex(i) }
    }

    func testCurrentNamingAPathOutside() {
        let i = indexCopy()
        IngestTestSupport.write("gen-000001/../../elsewhere\n", to: i + "/CURRENT")
        assertRefused([i], naming: ["CURRENT", "does not name a generation"]) { try openIndex(i) }
    }

    func testSegmentReplacedByAFIFO() throws {
        let i = indexCopy()
        let seg = try FileManager.default.contentsOfDirectory(atPath: i + "/segments").first { $0.hasSuffix(".idxseg") }!
        try FileManager.default.removeItem(atPath: i + "/segments/" + seg)
        XCTAssertEqual(mkfifo(i + "/segments/" + seg, 0o644), 0)
        assertRefused([i], naming: [seg, "FIFO"]) { try openIndex(i) }
    }

    /// The segment file, its header patched at `offset` with `value` and re-hashed (and the
    /// manifest's header hash updated): a checksummed lie.
    func patchSegmentHeader(_ i: String, offset: Int, value: UInt64) throws -> String {
        let seg = try FileManager.default.contentsOfDirectory(atPath: i + "/segments").first { $0.hasSuffix(".idxseg") }!
        let path = i + "/segments/" + seg
        var b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let sections = Int(b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 32, as: UInt32.self) })
        let headerEnd = 40 + sections * 32
        b.withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self) }
        let h = XXHash64.hash(b[0 ..< headerEnd])
        b.withUnsafeMutableBytes { $0.storeBytes(of: h.littleEndian, toByteOffset: headerEnd, as: UInt64.self) }
        try Data(b).write(to: URL(fileURLWithPath: path))
        editJSON(manifestPath) { m in
            var s = m["segments"] as! [[String: Any]]
            s[0]["headerHash"] = XXHash64.hex(h)
            m["segments"] = s
        }
        return seg
    }

    func testSegmentDocumentCountOfTwoToTheSixtyThree() throws {
        let i = indexCopy()
        let seg = try patchSegmentHeader(i, offset: 16, value: 1 << 63)
        assertRefused([i], naming: [seg, "document count"]) { try openIndex(i) }
    }

    func testSegmentSectionOffsetPastTheFile() throws {
        let i = indexCopy()
        let seg = try patchSegmentHeader(i, offset: 40 + 8, value: UInt64.max - 3)  // first section's offset
        assertRefused([i], naming: [seg, "section offset"]) { try openIndex(i) }
    }

    // MARK: .idxlex

    /// A lexical segment of three documents, `edit`ed, then re-checksummed.
    func lexicalFile(_ edit: (inout [UInt8]) -> Void) -> String {
        var b = LexicalSegmentBuilder.encode(["alien robot", "robot love story", "alien war"])
        edit(&b)
        let body = b.count - 8
        let h = XXHash64.hash(b[0 ..< body])
        b.withUnsafeMutableBytes { $0.storeBytes(of: h.littleEndian, toByteOffset: body, as: UInt64.self) }
        IngestTestSupport.write(b, to: dir + "/x.idxlex")
        return dir + "/x.idxlex"
    }

    func lexicalLayout(_ b: [UInt8]) -> (docs: Int, terms: Int, termBytes: Int, postings: Int, postingOffsets: Int, dfs: Int) {
        let docs = Int(b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 12, as: UInt32.self) })
        let terms = Int(b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16, as: UInt32.self) })
        let termBytes = Int(b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 32, as: UInt64.self) })
        let dfs = 48 + 4 * docs + 4 * (terms + 1)
        let postingOffsets = dfs + 4 * terms
        let postings = postingOffsets + 8 * (terms + 1) + termBytes
        return (docs, terms, termBytes, postings, postingOffsets, dfs)
    }

    func testLexicalPostingRowOutOfRange() {
        let p = lexicalFile { b in
            let l = lexicalLayout(b)
            b[l.postings] = 0x7F  // the first term's first row: 127 of 3 documents
        }
        assertRefused([dir], naming: ["x.idxlex", "row 127"]) { _ = try LexicalSegmentReader(path: p) }
        assertRefusedOnFirstRead(p, naming: "row 127")
    }

    /// A search's reader (`.onFirstRead`) opens a file whose first term ("alien") has damaged
    /// postings, answers queries that do not read that term, and refuses, naming the file, every
    /// query that does, before reading them: as a query, and as a feedback document's term.
    func assertRefusedOnFirstRead(_ path: String, naming why: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            let bm25 = BM25Scorer(segments: [try LexicalSegmentReader(path: path, verification: .onFirstRead)])
            XCTAssertFalse(try bm25.query(terms: ["war"]).isEmpty, file: file, line: line)
            for _ in 0 ..< 2 {  // refused again, not only the first time
                assertRefused([dir], naming: ["x.idxlex", why], file: file, line: line) { _ = try bm25.query(terms: ["robot", "alien"]) }
            }
            let war = try bm25.query(terms: ["war"])
            assertRefused([dir], naming: ["x.idxlex", why], file: file, line: line) {
                _ = try bm25.expanded(war, documents: [(2, "alien war")], weight: 1, terms: 10)
            }
        } catch {
            XCTFail("\(error)", file: file, line: line)
        }
    }

    func testLexicalPostingOffsetsOutOfOrder() {
        let p = lexicalFile { b in
            let l = lexicalLayout(b)
            b.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(1 << 40).littleEndian, toByteOffset: l.postingOffsets + 8, as: UInt64.self) }
        }
        assertRefused([dir], naming: ["x.idxlex", "posting offsets"]) { _ = try LexicalSegmentReader(path: p) }
    }

    func testLexicalTermBytesLengthOfTwoToTheSixtyFour() {
        let p = lexicalFile { b in b.withUnsafeMutableBytes { $0.storeBytes(of: UInt64.max, toByteOffset: 32, as: UInt64.self) } }
        assertRefused([dir], naming: ["x.idxlex", "term bytes length"]) { _ = try LexicalSegmentReader(path: p) }
    }

    func testLexicalDocumentFrequencyLie() {
        let p = lexicalFile { b in
            let l = lexicalLayout(b)
            b.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(3).littleEndian, toByteOffset: l.dfs, as: UInt32.self) }
        }
        assertRefused([dir], naming: ["x.idxlex", "document frequency"]) { _ = try LexicalSegmentReader(path: p) }
        assertRefusedOnFirstRead(p, naming: "its document frequency is 3")
    }

    func testLexicalLengthsDisagreeWithTheTotal() {
        let p = lexicalFile { b in b.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(99).littleEndian, toByteOffset: 24, as: UInt64.self) } }
        assertRefused([dir], naming: ["x.idxlex", "header says 99"]) { _ = try LexicalSegmentReader(path: p) }
    }

    func testLexicalTermsOutOfOrder() {
        let p = lexicalFile { b in
            let l = lexicalLayout(b)
            let start = l.postingOffsets + 8 * (l.terms + 1)
            b[start] = 0x7A  // "alien" becomes "zlien": the sorted table is no longer sorted
        }
        assertRefused([dir], naming: ["x.idxlex", "byte order"]) { _ = try LexicalSegmentReader(path: p) }
    }

    // MARK: model

    func safetensors(header: String, dataBytes: Int = 16) -> Data {
        var h = Array(header.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        var d = Data(withUnsafeBytes(of: UInt64(h.count).littleEndian, Array.init))
        d.append(contentsOf: h)
        d.append(Data(count: dataBytes))
        return d
    }

    func testSafetensorsShapeWhoseProductOverflows() {
        let d = safetensors(header: #"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}"#)
        assertRefused([], naming: ["m.safetensors", "tensor w", "more values than the file holds"]) { _ = try SafeTensors.parse(d, path: "m.safetensors") }
    }

    func testSafetensorsNegativeDimension() {
        let d = safetensors(header: #"{"w":{"dtype":"F32","shape":[-4,-1],"data_offsets":[0,16]}}"#)
        assertRefused([], naming: ["m.safetensors", "tensor w"]) { _ = try SafeTensors.parse(d, path: "m.safetensors") }
    }

    func testSafetensorsOffsetsPastTheFile() {
        let d = safetensors(header: #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[9223372036854775800,9223372036854775807]}}"#)
        assertRefused([], naming: ["m.safetensors", "tensor w"]) { _ = try SafeTensors.parse(d, path: "m.safetensors") }
    }

    func testSafetensorsHeaderLengthPastTheFile() {
        var d = Data(withUnsafeBytes(of: UInt64.max.littleEndian, Array.init))
        d.append(Data(count: 8))
        assertRefused([], naming: ["m.safetensors", "header length"]) { _ = try SafeTensors.parse(d, path: "m.safetensors") }
    }

    func modelCopy(_ edit: (inout [String: String]) -> Void) throws -> String {
        let m = BadInput.copy(f.model, to: dir + "/model")
        var st = try SafeTensors.read(path: m + "/model.safetensors")
        edit(&st.metadata)
        try st.serialized().write(to: URL(fileURLWithPath: m + "/model.safetensors"))
        return m
    }

    func testModelOfAMillionLayers() throws {
        let m = try modelCopy { $0["n_layers"] = "1000000" }
        assertRefused([m], naming: ["model.safetensors", "n_layers 1000000"]) { _ = try EncoderModel.load(directory: m) }
    }

    func testModelVocabularyOfATrillion() throws {
        let m = try modelCopy { $0["vocab_size"] = "1000000000000" }
        assertRefused([m], naming: ["model.safetensors", "vocab_size 1000000000000"]) { _ = try EncoderModel.load(directory: m) }
    }

    func testModelConfigNeedingMoreThanTheFileHolds() throws {
        let m = try modelCopy { $0["d_model"] = "4096"; $0["n_heads"] = "8" }
        assertRefused([m], naming: ["model.safetensors", "more than the file holds"]) { _ = try EncoderModel.load(directory: m) }
    }

    func testModelTokenizerLargerThanItsEmbeddingTable() throws {
        let m = BadInput.copy(f.model, to: dir + "/model")
        var st = try SafeTensors.read(path: m + "/model.safetensors")
        // A 20-word config with its tensors cut to match, beside the 200-word tokenizer.
        var cfg = try ModelCheckpoint.config(from: st.metadata, path: "x")
        cfg.vocabSize = 20
        let layout = ParameterLayout(cfg)
        let zeros = [Float](repeating: 0.01, count: layout.count)
        st = zeros.withUnsafeBufferPointer { ModelCheckpoint.tensors(of: $0.baseAddress!, layout: layout) }
        let tok = try WordLevelTokenizer(contentsOfFile: m + "/tokenizer.json")
        st.metadata = ModelCheckpoint.metadata(cfg, tokenizerHash: tok.hash, step: 1, trainedTokens: 16, titlesInText: false)
        try st.serialized().write(to: URL(fileURLWithPath: m + "/model.safetensors"))
        let model = try EncoderModel.load(directory: m)
        assertRefused([m], naming: ["tokenizer.json", "embeds only 20"]) { _ = try model.tokenizer() }
    }

    func testModelFileThatIsAFIFO() throws {
        let m = BadInput.copy(f.model, to: dir + "/model")
        try FileManager.default.removeItem(atPath: m + "/model.safetensors")
        XCTAssertEqual(mkfifo(m + "/model.safetensors", 0o644), 0)
        assertRefused([m], naming: ["model.safetensors", "FIFO"]) { _ = try EncoderModel.load(directory: m) }
    }
}
