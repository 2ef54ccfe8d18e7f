import Foundation
import IdxCorpus
import IdxModel

/// Masked-language-model loss of a trained model on held-out documents, with
/// the training's masking rule (15% of text positions; BERT's 80/10/10) drawn
/// from a fixed seed per document, so two models are scored on the same masks.
/// Forward only (no dropout): the encoder's forward, the LM head, cross-entropy.
public enum MLMLoss {
    public struct Result: Codable, Equatable {
        public var loss: Double        // mean cross-entropy over the masked positions (nats)
        public var maskedTokens: Int
        public var documents: Int
    }

    public static func evaluate(_ model: EncoderModel, corpus: TokenizedCorpus, maxTokens: Int = 32, seed: UInt64 = 1234,
                                maskProbability: Double = 0.15, batchSize: Int = 64) -> Result {
        let net = model.net
        let cfg = model.config
        let c = cfg.dModel, v = cfg.vocabSize
        let cut = max(3, min(maxTokens, cfg.maxLen))
        let randomRange = UInt64(max(1, v - 5))
        var total = 0.0
        var masked = 0
        var hSel = [Float]()
        var logits = [Float]()
        var start = 0
        while start < corpus.count {
            let end = min(corpus.count, start + batchSize)
            var b = PackedBatch()
            for d in start ..< end {
                let original = wrapDocument(corpus.document(d), maxTokens: cut)
                var input = original
                var g = SplitMix64(state: SplitMix64.derive([seed, UInt64(d)], .masking))
                let base = b.rowCount
                for p in 0 ..< original.count {
                    let t = original[p]
                    if t == SpecialToken.pad || t == SpecialToken.bos || t == SpecialToken.eos { continue }
                    guard g.nextDouble() < maskProbability else { continue }
                    b.selectedRows.append(base + p)
                    b.targets.append(t)
                    let r = g.nextDouble()
                    if r < 0.8 { input[p] = SpecialToken.mask } else if r < 0.9 { input[p] = Int32(5 + g.next() % randomRange) }
                }
                b.append(document: input)
            }
            start = end
            let m = b.selectedRows.count
            if m == 0 { continue }
            net.forward(b, training: false)
            let top = net.output
            hSel = [Float](repeating: 0, count: m * c)
            logits = [Float](repeating: 0, count: m * v)
            hSel.withUnsafeMutableBufferPointer { hs in
                for (i, r) in b.selectedRows.enumerated() { (hs.baseAddress! + i * c).update(from: top + r * c, count: c) }
                logits.withUnsafeMutableBufferPointer { lg in
                    let p = CFPtr(net.params.ptr)
                    // logits[M, V] = hSel[M, C] · lm_head[V, C]ᵀ + bias[V]
                    linearForward(lg.baseAddress!, CFPtr(hs.baseAddress!), p + net.layout.lmHeadW, p + net.layout.lmHeadB, m, c, v)
                    for i in 0 ..< m {
                        let row = lg.baseAddress! + i * v
                        var mx = -Float.infinity
                        for k in 0 ..< v where row[k] > mx { mx = row[k] }
                        var s = 0.0
                        for k in 0 ..< v { s += Double(expf(row[k] - mx)) }
                        total += Double(mx) + log(s) - Double(row[Int(b.targets[i])])
                    }
                }
            }
            masked += m
        }
        return Result(loss: masked > 0 ? total / Double(masked) : .nan, maskedTokens: masked, documents: corpus.count)
    }
}
