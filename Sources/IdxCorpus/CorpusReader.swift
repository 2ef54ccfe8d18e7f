import Foundation
import IdxBase

/// Reads a `corpora/<name>/` folder written by `idx ingest`, validating the manifest,
/// the format version, every shard's XXH64 and counts.
public struct CorpusReader: Sendable {
    public let directory: String
    let manifest: CorpusManifest

    public init(directory: String) throws {
        self.directory = directory
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            throw IdxError("\(directory): no such corpus folder; create it with `idx ingest CSV --out \(directory)`.")
        }
        let path = directory + "/manifest.json"
        guard let data = OutputPath.readSmallFile(path, limit: 256 << 20) else {
            throw IdxError("\(path): missing; \(directory) is not a corpus written by `idx ingest` (run it again).")
        }
        struct Version: Decodable { var format: String?; var formatVersion: Int? }
        guard let v = try? CorpusManifest.decoder().decode(Version.self, from: data), v.format == "idx-corpus",
              let version = v.formatVersion else {
            throw IdxError("\(path): not an idx corpus manifest; run `idx ingest` to rebuild \(directory).")
        }
        if version > CorpusManifest.currentVersion {
            throw IdxError("\(path): format version \(version) is newer than this idx reads (\(CorpusManifest.currentVersion)); upgrade idx.")
        }
        do {
            manifest = try CorpusManifest.decoder().decode(CorpusManifest.self, from: data)
        } catch {
            throw IdxError("\(path): unreadable manifest (\(error)); run `idx ingest` to rebuild \(directory).")
        }
        try Self.validate(manifest, path: path)
        var first = 0, tokens = 0
        for s in manifest.shards {
            guard s.firstDocument == first else { throw IdxError("\(path): shard \(s.index) does not follow the previous one; rebuild with `idx ingest`.") }
            first += s.documents; tokens += s.tokens
        }
        guard first == manifest.documents, tokens == manifest.tokens else {
            throw IdxError("\(path): shard counts (\(first) documents, \(tokens) tokens) disagree with the totals; rebuild with `idx ingest`.")
        }
    }

    public var documentCount: Int { manifest.documents }
    public var tokenCount: Int { manifest.tokens }
    public var tokenizerHash: String { manifest.tokenizerHash }
    /// Whether the documents are "Title. description" (`idx ingest --titles`) or descriptions only.
    public var titlesInText: Bool { manifest.titlesInText ?? false }
    public var shardCount: Int { manifest.shards.count }

    public func tokenizer() throws -> WordLevelTokenizer {
        let t = try WordLevelTokenizer(contentsOfFile: directory + "/" + manifest.tokenizerFile)
        if t.hash != manifest.tokenizerHash {
            throw IdxError("\(directory)/\(manifest.tokenizerFile): hash \(t.hash) differs from the manifest's \(manifest.tokenizerHash); the corpus is damaged, run `idx ingest` again.")
        }
        return t
    }

    /// The bytes of a shard file, checked against the manifest's size and XXH64.
    func verifiedFile(_ name: String, hash: String, bytes: Int) throws -> [UInt8] {
        let kind = FileKind(lstat: directory + "/" + name)
        guard kind == .regular || kind == .missing else {
            throw IdxError("\(directory)/\(name): is \(FileKind.describe(directory + "/" + name)), not a shard idx wrote; run `idx ingest` again.")
        }
        let data = try SyncedFile.read(directory + "/" + name)
        let h = XXHash64.hex(XXHash64.hash(data))
        if data.count != bytes || h != hash {
            throw IdxError("\(directory)/\(name): checksum mismatch (XXH64 \(h), \(data.count) bytes; manifest \(hash), \(bytes) bytes); the shard is corrupted, run `idx ingest` again.")
        }
        return data
    }

    public func readTokens() throws -> TokenizedCorpus {
        var corpus = TokenizedCorpus()
        corpus.tokens.reserveCapacity(min(manifest.tokens, 1 << 26))  // the manifest is not trusted with the allocation
        corpus.offsets.reserveCapacity(min(manifest.documents, 1 << 24) + 1)
        for s in manifest.shards {
            let packed = try verifiedFile(s.tokensFile, hash: s.tokensXxh64, bytes: s.tokensBytes)
            let raw = try Zstd.decompress(packed, name: directory + "/" + s.tokensFile, remedy: "run `idx ingest` again",
                                          limit: TokenShard.maxBytes(documents: s.documents, tokens: s.tokens))
            let first = corpus.tokens.count
            try TokenShard.decode(raw, name: directory + "/" + s.tokensFile, documents: s.documents, tokens: s.tokens, into: &corpus)
            try Self.checkIds(corpus.tokens[first...], vocabSize: manifest.vocabSize, name: directory + "/" + s.tokensFile)
        }
        return corpus
    }

    public func readMetadata() throws -> [DocumentMetadata] {
        var all = [DocumentMetadata]()
        all.reserveCapacity(manifest.documents)
        for s in manifest.shards { all += try readMetadata(shard: s) }
        return all
    }

    func readMetadata(shard s: CorpusManifest.Shard) throws -> [DocumentMetadata] {
        let name = directory + "/" + s.metadataFile
        let packed = try verifiedFile(s.metadataFile, hash: s.metadataXxh64, bytes: s.metadataBytes)
        var lines = try Zstd.decompress(packed, name: name, remedy: "run `idx ingest` again")
        // JSON lines -> one JSON array, decoded in one call.
        if lines.last == 0x0A { lines.removeLast() }
        for i in lines.indices where lines[i] == 0x0A { lines[i] = 0x2C }
        let array = [0x5B] + lines + [0x5D]
        let docs: [DocumentMetadata]
        do {
            docs = try CorpusManifest.decoder().decode([DocumentMetadata].self, from: Data(array))
        } catch {
            throw IdxError("\(name): unreadable metadata (\(error)); run `idx ingest` again.")
        }
        guard docs.count == s.documents else {
            throw IdxError("\(name): holds \(docs.count) documents, the manifest says \(s.documents); run `idx ingest` again.")
        }
        return docs
    }

    /// Re-reads every shard: checksums, counts, offsets, metadata alignment and ids within
    /// the vocabulary. Returns a one-line summary; throws naming the first bad shard.
    public func verify() throws -> String {
        let tok = try tokenizer()
        var docs = 0, tokens = 0, bytes = 0
        for s in manifest.shards {
            var corpus = TokenizedCorpus()
            let name = directory + "/" + s.tokensFile
            let packed = try verifiedFile(s.tokensFile, hash: s.tokensXxh64, bytes: s.tokensBytes)
            try TokenShard.decode(try Zstd.decompress(packed, name: name, remedy: "run `idx ingest` again"), name: name, documents: s.documents, tokens: s.tokens, into: &corpus)
            if let bad = corpus.tokens.first(where: { $0 < 0 || Int($0) >= tok.vocabSize }) {
                throw IdxError("\(name): id \(bad) is outside the vocabulary (\(tok.vocabSize)); run `idx ingest` again.")
            }
            _ = try readMetadata(shard: s)
            docs += s.documents; tokens += s.tokens; bytes += s.tokensBytes + s.metadataBytes
        }
        return "verify: \(directory) ok: \(manifest.shards.count) shards, \(docs) documents, \(tokens) tokens, vocabulary \(tok.vocabSize), \(bytes) bytes of shards, checksums match"
    }
}
