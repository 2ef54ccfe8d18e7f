import Foundation
import IdxBase

/// The encoder's sizes. They live in the checkpoint's metadata, never in code constants.
public struct ModelConfig: Codable, Equatable, Sendable {
    public var vocabSize: Int
    public var dModel: Int
    public var nHeads: Int
    public var nLayers: Int
    public var dFF: Int
    public var maxLen: Int
    public var dropout: Float

    public init(vocabSize: Int, dModel: Int = 128, nHeads: Int = 4, nLayers: Int = 3, dFF: Int = 256,
                maxLen: Int = 64, dropout: Float = 0.1) {
        self.vocabSize = vocabSize; self.dModel = dModel; self.nHeads = nHeads; self.nLayers = nLayers
        self.dFF = dFF; self.maxLen = maxLen; self.dropout = dropout
    }

    /// The largest vocabulary a model may have.
    public static let maxVocabSize = 1 << 24

    /// A clear error when the sizes cannot make a model.
    public func validate() throws {
        guard vocabSize > 5, dModel > 0, nHeads > 0, nLayers > 0, dFF > 0, maxLen > 2 else {
            throw IdxError("model config \(self): every size must be positive (vocab > 5, max_len > 2).")
        }
        // Caps far above any model idx trains, so that a size read from a file (n_layers 10^6)
        // is an error before it becomes an allocation or an overflow.
        let caps: [(String, Int, Int)] = [("vocab_size", vocabSize, Self.maxVocabSize), ("d_model", dModel, 8192), ("n_heads", nHeads, 512),
                                          ("n_layers", nLayers, 256), ("d_ff", dFF, 65_536), ("max_len", maxLen, 65_536)]
        for (name, value, cap) in caps where value > cap {
            throw IdxError("model config: \(name) \(value) is above idx's limit of \(cap); choose a smaller size.")
        }
        guard dModel % nHeads == 0 else {
            throw IdxError("model config: d_model \(dModel) is not divisible by heads \(nHeads); choose --heads that divides --d-model.")
        }
        guard dropout >= 0, dropout < 1 else { throw IdxError("model config: dropout \(dropout) must be in [0, 1).") }
    }
}

/// One named tensor inside the flat parameter buffer (PyTorch state_dict name and shape).
public struct TensorSlot: Sendable {
    public var name: String
    public var shape: [Int]
    public var offset: Int
    public var count: Int { shape.reduce(1, *) }
}

/// Where every parameter lives in the ONE contiguous Float buffer (gradients and Adam
/// moments use the same layout), in PyTorch's state_dict order.
public struct ParameterLayout {
    struct Layer {
        var inProjW = 0, inProjB = 0, outProjW = 0, outProjB = 0
        var lin1W = 0, lin1B = 0, lin2W = 0, lin2B = 0
        var norm1W = 0, norm1B = 0, norm2W = 0, norm2B = 0
    }
    public var tokEmb = 0, posEmb = 0, lmHeadW = 0, lmHeadB = 0
    var layers: [Layer] = []
    var slots: [TensorSlot] = []
    public var count = 0

    public init(_ cfg: ModelConfig) {
        let c = cfg.dModel, v = cfg.vocabSize, f = cfg.dFF
        func add(_ name: String, _ shape: [Int]) -> Int {
            let s = TensorSlot(name: name, shape: shape, offset: count)
            slots.append(s); count += s.count
            return s.offset
        }
        tokEmb = add("token_emb.weight", [v, c])
        posEmb = add("pos_emb.weight", [cfg.maxLen, c])
        for i in 0 ..< cfg.nLayers {
            let p = "encoder.layers.\(i)."
            var l = Layer()
            l.inProjW = add(p + "self_attn.in_proj_weight", [3 * c, c])
            l.inProjB = add(p + "self_attn.in_proj_bias", [3 * c])
            l.outProjW = add(p + "self_attn.out_proj.weight", [c, c])
            l.outProjB = add(p + "self_attn.out_proj.bias", [c])
            l.lin1W = add(p + "linear1.weight", [f, c])
            l.lin1B = add(p + "linear1.bias", [f])
            l.lin2W = add(p + "linear2.weight", [c, f])
            l.lin2B = add(p + "linear2.bias", [c])
            l.norm1W = add(p + "norm1.weight", [c])
            l.norm1B = add(p + "norm1.bias", [c])
            l.norm2W = add(p + "norm2.weight", [c])
            l.norm2B = add(p + "norm2.bias", [c])
            layers.append(l)
        }
        lmHeadW = add("lm_head.weight", [v, c])
        lmHeadB = add("lm_head.bias", [v])
    }
}

/// SplitMix64: the counter-based generator behind every random choice in training
/// (sampling, masking, dropout, init). Streams are derived from (seed, step, slot, …),
/// so a step's randomness is a pure function of its coordinates, never of history.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64
    public init(state: UInt64) { self.state = state }
    @inline(__always) public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 53 bits.
    @inline(__always) public mutating func nextDouble() -> Double { Double(next() >> 11) * 0x1p-53 }
    /// Uniform in [0, 1) with 24 bits (dropout).
    @inline(__always) public mutating func nextFloat() -> Float { Float(next() >> 40) * 0x1p-24 }
    /// Standard normal (Box-Muller), for t-SNE's random initialisation.
    public mutating func normal() -> Double {
        let u1 = (Double(next() >> 11) + 1) / 9007199254740993.0
        let u2 = Double(next() >> 11) / 9007199254740992.0
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
    /// Derives a stream seed from coordinates (seed, step, slot, …).
    public static func derive(_ parts: [UInt64]) -> UInt64 {
        var h: UInt64 = 0x243F_6A88_85A3_08D3
        for p in parts { var g = SplitMix64(state: h ^ p); h = g.next() }
        return h
    }
    /// Derives the stream of `purpose` at coordinates `parts`.
    public static func derive(_ parts: [UInt64], _ purpose: RandomStream) -> UInt64 { derive(parts + [purpose.rawValue]) }
}

/// What a random stream is for: the last coordinate `SplitMix64.derive` mixes in, one value a
/// purpose, so that no two uses of the same (seed, step, slot) share numbers. The values are
/// part of every trained model (changing one changes the run): never renumber them.
public enum RandomStream: UInt64 {
    case documentChoice = 1       // which document fills a batch slot
    case masking = 2              // MLM masks (training, and eval's MLM loss)
    case dropout = 3              // a training document's dropout seed
    case contrastiveView = 10     // view v's crop and BM25 neighbour: 10 + v
    case contrastiveSecondView = 11
    case contrastiveDropout = 13  // a contrastive view's dropout seed
    case halvesSplit = 20         // where a document splits into its two halves
    case spanSplit = 21           // the span of an inverse-cloze pair
    case keywords = 22            // the words of a keywords view
    case lookAlike = 23           // which BM25 neighbour fills a span-neighbours slot
    case contentSpanRedraw = 0x5bd1e995  // xor-ed into a content-span pair's span seed: its redraws
    case initialization = 0x1417  // the model's initial weights

    /// The stream of contrastive view `view` (0 or 1).
    public static func contrastiveView(_ view: Int) -> RandomStream { view == 0 ? .contrastiveView : .contrastiveSecondView }
}
