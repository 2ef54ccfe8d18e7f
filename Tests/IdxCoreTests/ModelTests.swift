import XCTest
import IdxBase
import IdxModel
import IdxTrain

final class ModelTests: XCTestCase {
    /// OpenBLAS 0.3.21 runs CPUs it does not know on narrow kernels (Prescott on an Emerald Rapids,
    /// Haswell on a Zen 4); idx switches to the widest the CPU's flags allow, and leaves a choice
    /// as wide as that alone.
    func testBLASKernelsAreTheWidestTheCPURuns() {
        let avx512: Set<String> = ["sse3", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl"]
        let avx2: Set<String> = ["sse3", "avx", "avx2", "fma"]
        XCTAssertEqual(BLASRuntime.betterCore(than: "Prescott", flags: avx512), "SkylakeX")
        XCTAssertEqual(BLASRuntime.betterCore(than: "Haswell", flags: avx512), "SkylakeX")
        XCTAssertEqual(BLASRuntime.betterCore(than: "Zen", flags: avx512), "SkylakeX")
        XCTAssertNil(BLASRuntime.betterCore(than: "Cooperlake", flags: avx512))
        XCTAssertNil(BLASRuntime.betterCore(than: "SkylakeX", flags: avx512))
        XCTAssertEqual(BLASRuntime.betterCore(than: "Prescott", flags: avx2), "Haswell")
        XCTAssertEqual(BLASRuntime.betterCore(than: "Sandybridge", flags: avx2), "Haswell")
        XCTAssertNil(BLASRuntime.betterCore(than: "Zen", flags: avx2))
        XCTAssertNil(BLASRuntime.betterCore(than: "Prescott", flags: ["sse3", "avx"]))
        // AVX-512 without BW/VL (Knights Landing) is not what the SkylakeX kernels need.
        XCTAssertEqual(BLASRuntime.betterCore(than: "Prescott", flags: avx2.union(["avx512f"])), "Haswell")
    }

    func testEmbedBatchedEqualsOneAtATime() throws {
        let dir = NSTemporaryDirectory() + "idx-embed-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tok = Data(#"{"model":{"type":"WordLevel","vocab":{}}}"#.utf8)
        let t = try Trainer(config: TinyTraining.config, options: TinyTraining.options(), corpus: TinyTraining.corpus(),
                            tokenizerHash: XXHash64.hex(XXHash64.hash(tok)))
        _ = try t.trainStep()
        try t.writeCheckpoint(directory: dir, tokenizerJSON: tok, corpusPath: "c", log: "", elapsed: 0)
        let model = try EncoderModel.load(directory: dir)
        var corpus = TinyTraining.corpus(documents: 11)
        corpus.append([Int32]())  // an empty document: [BOS][EOS]
        let c = model.config.dModel
        let batched = model.embed(corpus, range: 2 ..< 12, maxTokens: 10, batchSize: 4)
        XCTAssertEqual(batched.count, 10 * c)
        var worst: Float = 0
        for d in 2 ..< 12 {
            let one = model.embed(corpus, range: d ..< d + 1, maxTokens: 10, batchSize: 1)
            for k in 0 ..< c { worst = max(worst, abs(one[k] - batched[(d - 2) * c + k])) }
        }
        XCTAssertLessThanOrEqual(worst, 1e-5)
        // no dropout: the same call twice is identical; cutting changes long documents only
        XCTAssertEqual(model.embed(corpus, range: 2 ..< 12, maxTokens: 10, batchSize: 4), batched)
        XCTAssertTrue(batched.allSatisfy { $0.isFinite })
    }

    func testWrapDocument() {
        XCTAssertEqual(wrapDocument([7, 8, 9], maxTokens: 32), [2, 7, 8, 9, 3])
        XCTAssertEqual(wrapDocument([7, 8, 9], maxTokens: 4), [2, 7, 8, 9])
        XCTAssertEqual(wrapDocument([], maxTokens: 4), [2, 3])
    }
}
