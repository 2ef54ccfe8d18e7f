import CSupport
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

        let inference = InferenceEncoder(config: cfg, layout: net.layout, parameters: net.params.ptr,
                                         transposed: TransposedWeights(config: cfg, layout: net.layout, parameters: net.params.ptr))
        let pooled = inference.embed(sequences: sequences)
        // The batch is at most `smallRows` rows (idx_sgemm_rows); twice the batch is more (OpenBLAS's sgemm):
        // both give the same vectors.
        XCTAssertLessThanOrEqual(lengths.reduce(0, +), InferenceEncoder.smallRows)
        XCTAssertGreaterThan(2 * lengths.reduce(0, +), InferenceEncoder.smallRows)
        let twice = inference.embed(sequences: sequences + sequences)
        XCTAssertLessThanOrEqual(zip(twice, pooled + pooled).map { abs($0 - $1) }.max()!, 1e-5)
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

    /// Every path of `idx_sgemm_rows` the CPU has against double-precision arithmetic, over
    /// shapes at and around its blocks (4 rows, 64 / 32 columns) with strides wider than the
    /// matrices and C accumulated onto.
    func testSmallRowProductsMatchPlainArithmetic() {
        var seed: UInt64 = 3
        func next() -> Float {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int(seed >> 40) % 2001 - 1000) / 1000
        }
        var paths = Set<Int32>()
        for path: Int32 in [0, 1, 2] {
            for (m, n, k) in [(1, 1, 1), (3, 17, 5), (4, 64, 128), (5, 65, 33), (8, 384, 128), (9, 31, 256), (13, 100, 7)] {
                let lda = k + 3, ldb = n + 2, ldc = n + 5
                let a = (0 ..< m * lda).map { _ in next() }, bt = (0 ..< k * ldb).map { _ in next() }
                var c = (0 ..< m * ldc).map { _ in next() }
                var expected = c.map(Double.init)
                for i in 0 ..< m { for j in 0 ..< n { for p in 0 ..< k { expected[i * ldc + j] += Double(a[i * lda + p]) * Double(bt[p * ldb + j]) } } }
                paths.insert(idx_sgemm_rows_with(path, m, n, k, a, lda, bt, ldb, &c, ldc))
                for i in 0 ..< m * ldc {
                    // Columns past n are padding: left as they were.
                    XCTAssertEqual(Double(c[i]), expected[i], accuracy: 1e-4 * Double(k), "path \(path), \(m)×\(n)×\(k), element \(i)")
                }
            }
        }
        print("idx_sgemm_rows paths run here: \(paths.sorted())")
    }
}
