import XCTest
@testable import IdxModel

/// The inference-only forward (`InferenceEncoder`, behind `EncoderModel.embed`) against
/// PyTorch's pooled embeddings (the parity fixture) and against the training network.
final class InferenceTests: XCTestCase {
    func testPooledEmbeddingsMatchPyTorchAndTheTrainingForward() throws {
        let fx = try SafeTensors.read(path: ParityTests.fixturePath)
        let m = fx.metadata
        let cfg = ModelConfig(vocabSize: Int(m["vocab_size"]!)!, dModel: Int(m["d_model"]!)!, nHeads: Int(m["n_heads"]!)!,
                              nLayers: Int(m["n_layers"]!)!, dFF: Int(m["d_ff"]!)!, maxLen: Int(m["max_len"]!)!, dropout: 0.1)
        let net = EncoderNetwork(config: cfg)
        ParityTests.fillWeights(net, seed: UInt64(m["weight_seed"]!)!)
        let x = fx.tensors["input_ids"]!, lengths = fx.tensors["lengths"]!.data.map { Int($0) }
        let t = x.shape[1]
        let sequences = lengths.enumerated().map { b, n in (0 ..< n).map { Int32(x.data[b * t + $0]) } }

        let inference = InferenceEncoder(config: cfg, layout: net.layout, parameters: net.params.ptr)
        let pooled = inference.embed(sequences: sequences)
        let ref = fx.tensors["pooled"]!.data
        XCTAssertEqual(pooled.count, ref.count)
        let err = zip(pooled, ref).map { abs($0 - $1) }.max()!
        print("inference parity: pooled embedding max abs error \(err)")
        XCTAssertLessThanOrEqual(err, 1e-4)

        var batch = PackedBatch()
        for s in sequences { batch.append(document: s) }
        net.forward(batch, training: false)
        let train = meanPool(net.output, docStart: batch.docStart, c: cfg.dModel)
        XCTAssertLessThanOrEqual(zip(pooled, train).map { abs($0 - $1) }.max()!, 1e-5)

        // One document at a time gives the same vectors as the batch.
        for (i, s) in sequences.enumerated() {
            let one = inference.embed(sequences: [s])
            for k in 0 ..< cfg.dModel { XCTAssertEqual(one[k], pooled[i * cfg.dModel + k], accuracy: 1e-5) }
        }
    }
}
