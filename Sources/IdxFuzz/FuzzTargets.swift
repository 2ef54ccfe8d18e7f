import Foundation
import IdxBase
import IdxCorpus
import IdxLexical
import IdxModel
import IdxStore
import IdxNightly
import IdxProjection

/// One entry point per reader idx has, for libFuzzer (`scripts/fuzz TARGET SECONDS`, the
/// `idx-fuzz` product) and for the regression tests, which replay the committed seeds and
/// crash reproducers (Tests/IdxCoreTests/Fixtures/fuzz/<target>/). A reader may throw an
/// IdxError on any input; it must never crash, hang or read out of bounds. Where a checksum
/// would stop the fuzzer at the door, the harness recomputes it, so that what lies behind
/// the checksum is fuzzed too (the "checksummed lies" of issue 22).
public enum FuzzTarget: String, CaseIterable, Sendable {
    case csv            // CSV rows through libcsv and ingest's column and cleaning rules
    case corpusShard    // a decompressed token shard, and the ids check
    case corpusManifest // a corpus manifest.json
    case segment        // a vector segment (.idxseg), header and section hashes recomputed
    case lexical        // a BM25 segment (.idxlex), trailing checksum recomputed
    case indexManifest  // an index generation's manifest.json and CURRENT
    case safetensors    // model.safetensors and the model config in its metadata
    case tokenizer      // tokenizer.json, then encoding a text with it
    case config         // idx.toml
    case projection     // a generation's projection.idxmap (idx serve's map), trailing checksum recomputed

    /// A scratch folder of this process for readers that take paths (/dev/shm when present).
    static let scratch: String = {
        let base = FileKind(stat: "/dev/shm") == .directory ? "/dev/shm" : NSTemporaryDirectory()
        let dir = base + "/idx-fuzz-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }()

    /// Runs one input; errors of the readers are the expected outcome for most inputs.
    public func run(_ data: [UInt8]) {
        do { try body(data) } catch is IdxError {} catch {}
    }

    private func write(_ bytes: [UInt8], _ name: String) -> String {
        let path = Self.scratch + "/" + name
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    /// `run`, with the reader's error: a seed (a real file) must pass.
    func body(_ data: [UInt8]) throws {
        switch self {
        case .csv:
            _ = try Ingest.precheck(write(data, "in.csv"), maxBytes: 1 << 20)
        case .corpusShard:
            guard data.count >= TokenShard.headerBytes else { return }
            let docs = TokenShard.readLE(data, 16), toks = TokenShard.readLE(data, 24)
            guard docs < 1 << 32, toks < 1 << 32 else { return }  // the manifest's counts (validated there) must match
            var corpus = TokenizedCorpus()
            try TokenShard.decode(data, name: "shard", documents: Int(docs), tokens: Int(toks), into: &corpus)
            try CorpusReader.checkIds(corpus.tokens[...], vocabSize: 200, name: "shard")
        case .corpusManifest:
            let m = try CorpusManifest.decoder().decode(CorpusManifest.self, from: Data(data))
            try CorpusReader.validate(m, path: "manifest.json")
        case .segment:
            let reader = try SegmentReader(path: write(Self.rehashedSegment(data), "s.idxseg"))
            try reader.verifyMetadata()
            if reader.count > 0 {
                var v = [Float](repeating: 0, count: reader.dimension)
                reader.decode(reader.count - 1, into: &v)
            }
        case .lexical:
            let b = Self.rehashedTail(data)
            // As a search reads it (only the queried terms' postings checked, before scoring
            // them), then as idx index does (everything checked at open).
            let path = write(b, "l.idxlex")
            let bm25 = BM25Scorer(segments: [try LexicalSegmentReader(path: path, verification: .onFirstRead)])
            let q = try bm25.query(terms: ["alien", "robot", "love"])
            var scores = [Float](repeating: 0, count: bm25.documentCount)
            scores.withUnsafeMutableBufferPointer { _ = bm25.score(q, into: $0.baseAddress!) }
            _ = try LexicalSegmentReader(path: path)
        case .indexManifest:
            // The first line is CURRENT, the rest the manifest of the generation it names.
            let nl = data.firstIndex(of: 0x0A) ?? data.count
            let dir = Self.scratch + "/index"
            try? FileManager.default.removeItem(atPath: dir)
            try FileManager.default.createDirectory(atPath: dir + "/gen-000001", withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: dir + "/CURRENT", contents: Data(data[0 ..< nl]))
            _ = FileManager.default.createFile(atPath: dir + "/gen-000001/manifest.json", contents: Data(data[min(nl + 1, data.count)...]))
            _ = try IndexLayout.readCurrent(dir)
        case .safetensors:
            let st = try SafeTensors.parse(Data(data), path: "model.safetensors")
            let cfg = try ModelCheckpoint.config(from: st.metadata, path: "model.safetensors")
            let layout = ParameterLayout(cfg)
            guard layout.count <= data.count / 4 else { return }
            let params = FloatBuffer(layout.count)
            try ModelCheckpoint.copy(from: st, into: params.ptr, layout: layout, path: "model.safetensors")
        case .tokenizer:
            let t = try WordLevelTokenizer(jsonBytes: data, source: "tokenizer.json")
            _ = t.encode("alien robot love story at the end of the world")
        case .config:
            _ = try NightlyConfig.apply(toml: String(decoding: data, as: UTF8.self), source: "idx.toml", to: NightlyConfig())
        case .projection:
            // Checked against an index of as many documents as the file claims (when its size
            // could hold them) and the manifest it names, so the fuzzer reaches the coordinates.
            let b = Self.rehashedTail(data)
            let claimed = b.count >= 24 ? TokenShard.readLE(b, 16) : 0
            let boundTo = b.count >= 32 ? TokenShard.readLE(b, 24) : 0
            _ = try b.withUnsafeBytes { all in
                try AttachedProjection.decode(all, path: "projection.idxmap", documents: claimed <= UInt64(b.count) ? Int(claimed) : 1,
                                              remedy: "attach a new one") { boundTo }
            }
        }
    }

    /// `data` with its last 8 bytes replaced by the XXH64 of the bytes before them (the
    /// trailing checksum of .idxlex and .idxmap files).
    static func rehashedTail(_ data: [UInt8]) -> [UInt8] {
        var b = data
        guard b.count >= 8 else { return b }
        let end = b.count - 8
        let h = XXHash64.hash(b[0 ..< end])
        b.withUnsafeMutableBytes { $0.storeBytes(of: h.littleEndian, toByteOffset: end, as: UInt64.self) }
        return b
    }

    /// A segment with its header hash and its sections' hashes recomputed over whatever the
    /// bytes now say (bounds permitting), so that the fuzzer gets past the checksums.
    static func rehashedSegment(_ data: [UInt8]) -> [UInt8] {
        var b = data
        guard b.count >= 40 else { return b }
        let sections = Int(b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 32, as: UInt32.self) })
        guard sections < 64 else { return b }
        let headerEnd = 40 + sections * 32
        guard headerEnd + 8 <= b.count else { return b }
        for s in 0 ..< sections {
            let e = 40 + s * 32
            let kind = b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: e, as: UInt32.self) }
            let offset = b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: e + 8, as: UInt64.self) }
            let length = b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: e + 16, as: UInt64.self) }
            guard offset <= UInt64(b.count), length <= UInt64(b.count) - offset,
                  kind != SegmentFormat.Section.vectorData.rawValue, kind != SegmentFormat.Section.metadataData.rawValue else { continue }
            let h = XXHash64.hash(b[Int(offset) ..< Int(offset + length)])
            b.withUnsafeMutableBytes { $0.storeBytes(of: h.littleEndian, toByteOffset: e + 24, as: UInt64.self) }
        }
        let h = XXHash64.hash(b[0 ..< headerEnd])
        b.withUnsafeMutableBytes { $0.storeBytes(of: h.littleEndian, toByteOffset: headerEnd, as: UInt64.self) }
        return b
    }
}
