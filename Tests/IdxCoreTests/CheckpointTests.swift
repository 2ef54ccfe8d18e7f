import XCTest
import IdxBase
import IdxModel
import IdxTrain

final class CheckpointTests: XCTestCase {
    var dir = ""
    override func setUp() {
        dir = NSTemporaryDirectory() + "idx-ckpt-\(getpid())-\(UInt32.random(in: 0 ... .max))"
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    let tokJSON = Data(#"{"model":{"type":"WordLevel","vocab":{}}}"#.utf8)
    var tokHash: String { XXHash64.hex(XXHash64.hash(tokJSON)) }

    func trainer(_ steps: Int = 6) throws -> Trainer {
        try Trainer(config: TinyTraining.config, options: TinyTraining.options(steps: steps), corpus: TinyTraining.corpus(), tokenizerHash: tokHash)
    }

    /// Killed after the step-3 checkpoint and resumed: the same losses, bit for bit, as a run never interrupted.
    func testResumeIsBitExact() throws {
        let straight = try trainer()
        var expected = [Double]()
        for s in 1 ... 6 {
            expected.append(try straight.trainStep().loss)
            if s == 3 { try straight.writeCheckpoint(directory: dir, tokenizerJSON: tokJSON, corpusPath: "c", log: TrainLog.header, elapsed: 1) }
        }
        let (resumed, log, elapsed) = try Trainer.resume(directory: dir, corpus: TinyTraining.corpus(), tokenizerHash: tokHash, corpusPath: "c")
        XCTAssertEqual(resumed.step, 3); XCTAssertEqual(log, TrainLog.header); XCTAssertEqual(elapsed, 1)
        var got = [Double]()
        for _ in 4 ... 6 { got.append(try resumed.trainStep().loss) }
        XCTAssertEqual(got, Array(expected[3...]))
        XCTAssertEqual(Array(resumed.parameters), Array(straight.parameters))
    }

    func testResumeRejectsAnotherTokenizerAndDamagedFiles() throws {
        let t = try trainer()
        _ = try t.trainStep()
        try t.writeCheckpoint(directory: dir, tokenizerJSON: tokJSON, corpusPath: "c", log: TrainLog.header, elapsed: 0)
        XCTAssertThrowsError(try Trainer.resume(directory: dir, corpus: TinyTraining.corpus(), tokenizerHash: "ffffffffffffffff", corpusPath: "other")) { e in
            XCTAssertTrue("\(e)".contains("tokenizer"), "\(e)")
        }
        // truncate the model: resume and load both refuse with a clear message
        let path = dir + "/model.safetensors"
        let data = FileManager.default.contents(atPath: path)!
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try Trainer.resume(directory: dir, corpus: TinyTraining.corpus(), tokenizerHash: tokHash, corpusPath: "c")) { e in
            XCTAssertTrue("\(e)".contains("truncated or damaged"), "\(e)")
        }
        XCTAssertThrowsError(try EncoderModel.load(directory: dir)) { e in XCTAssertTrue(e is IdxError, "\(e)") }
        try FileManager.default.removeItem(atPath: path)
        XCTAssertThrowsError(try EncoderModel.load(directory: dir)) { e in XCTAssertTrue("\(e)".contains("cannot read the model"), "\(e)") }
        XCTAssertThrowsError(try Trainer.resume(directory: dir + "-none", corpus: TinyTraining.corpus(), tokenizerHash: tokHash, corpusPath: "c"))
    }

    /// state.json has no checksum: a value no run writes is an error naming the file, not a
    /// trap (a negative step stopped `idx train --resume` on one) or a run that trains wrongly.
    func testResumeRejectsAStateNoRunWrites() throws {
        let t = try trainer()
        _ = try t.trainStep()
        try t.writeCheckpoint(directory: dir, tokenizerJSON: tokJSON, corpusPath: "c", log: TrainLog.header, elapsed: 0)
        let path = dir + "/state.json"
        let original = try XCTUnwrap(FileManager.default.contents(atPath: path))
        XCTAssertNoThrow(try Trainer.resume(directory: dir, corpus: TinyTraining.corpus(), tokenizerHash: tokHash, corpusPath: "c"))
        let lies: [(String, Any)] = [("step", -5), ("maskProbability", 5.0), ("maxGradNorm", -1.0), ("weightDecay", -0.5), ("elapsedSeconds", -1.0)]
        for (key, value) in lies {
            var state = try XCTUnwrap(try JSONSerialization.jsonObject(with: original) as? [String: Any])
            if key == "step" || key == "elapsedSeconds" { state[key] = value } else {
                var options = try XCTUnwrap(state["options"] as? [String: Any])
                options[key] = value
                state["options"] = options
            }
            try JSONSerialization.data(withJSONObject: state).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try Trainer.resume(directory: dir, corpus: TinyTraining.corpus(), tokenizerHash: tokHash, corpusPath: "c"), key) { e in
                XCTAssertTrue("\(e)".contains("state.json: holds values no training writes"), "\(key): \(e)")
            }
        }
    }

    func testCheckpointReplacesTheFolderAtomicallyAndLoads() throws {
        let t = try trainer()
        _ = try t.trainStep()
        try t.writeCheckpoint(directory: dir, tokenizerJSON: tokJSON, corpusPath: "c", log: "a", elapsed: 0)
        _ = try t.trainStep()
        try t.writeCheckpoint(directory: dir, tokenizerJSON: tokJSON, corpusPath: "c", log: "b", elapsed: 0)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        XCTAssertEqual(files, ["model.safetensors", "optimizer.safetensors", "state.json", "tokenizer.json", "train-log.csv"])
        let siblings = try FileManager.default.contentsOfDirectory(atPath: (dir as NSString).deletingLastPathComponent)
        XCTAssertFalse(siblings.contains { $0.contains((dir as NSString).lastPathComponent + ".tmp") }, "no staged folder left")
        let model = try EncoderModel.load(directory: dir)
        XCTAssertEqual(model.config, TinyTraining.config)
        XCTAssertEqual(model.tokenizerHash, tokHash)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: model.net.params.ptr, count: t.parameterCount)), Array(t.parameters))
        let st = try SafeTensors.read(path: dir + "/model.safetensors")
        XCTAssertEqual(st.metadata["step"], "2")
        XCTAssertEqual(st.tensors["encoder.layers.1.self_attn.in_proj_weight"]?.shape, [48, 16])
        XCTAssertEqual(st.tensors.count, 4 + 12 * 2)
    }

    func testSafeTensorsRoundTripAndRejectsGarbage() throws {
        var st = SafeTensors()
        st.add("a", shape: [2, 3], data: [1, 2, 3, 4, 5, 6]); st.add("b", shape: [1], data: [-1])
        st.metadata = ["k": "v"]
        let back = try SafeTensors.parse(st.serialized(), path: "x")
        XCTAssertEqual(back.tensors["a"]?.data, [1, 2, 3, 4, 5, 6]); XCTAssertEqual(back.tensors["b"]?.shape, [1])
        XCTAssertEqual(back.metadata, ["k": "v"]); XCTAssertEqual(back.order, ["a", "b"])
        XCTAssertThrowsError(try SafeTensors.parse(Data([1, 2, 3]), path: "x"))
        XCTAssertThrowsError(try SafeTensors.parse(st.serialized().dropLast(4), path: "x"))
    }
}
