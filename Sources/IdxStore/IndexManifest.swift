import Foundation
import IdxBase

/// `indexes/<name>/gen-NNNNNN/manifest.json`: what one published generation holds.
public struct IndexManifest: Codable, Equatable {
    public static let format = "idx-vector-index"
    /// Bumped with any change an older reader could misread (manifest or segment).
    public static let version = 1

    public struct SegmentEntry: Codable, Equatable {
        public var file: String          // relative to the index folder: segments/seg-….idxseg
        public var count: Int
        public var bytes: Int
        public var headerHash: String    // XXH64 hex of the segment header (binds manifest and file)
        public var source: String        // the corpus (or vector file) it was built from
        /// The segment's BM25 inverted index (`.idxlex`); nil in indexes built before it existed
        /// or from raw vectors, which then search by cosine alone.
        public var lexical: LexicalEntry? = nil
        /// The segment's files, relative to the index folder (vectors, then its lexical twin).
        public var files: [String] { [file] + (lexical.map { [$0.file] } ?? []) }
    }

    public struct LexicalEntry: Codable, Equatable {
        public var file: String          // segments/seg-….idxlex
        public var bytes: Int
        public var hash: String          // XXH64 hex of the whole file
        public var terms: Int
    }

    /// Corpus statistics for `--standardize`: z-score each dimension before normalising.
    public struct Standardization: Codable, Equatable {
        public var mean: [Float]
        public var std: [Float]
    }

    public var format: String
    public var formatVersion: Int
    public var generation: Int
    public var dimension: Int
    public var count: Int
    public var modelHash: String
    public var tokenizerHash: String
    /// The model the vectors came from, relative to the index folder (absolute when it was given
    /// so, and in manifests written before relative paths); "" if none. See `ModelPath`.
    public var modelDirectory: String
    public var maxTokens: Int
    public var standardization: Standardization?
    public var segments: [SegmentEntry]
    public var created: String
    /// The lexical (BM25) share of a hybrid score, (1 − w) · cosine + w · BM25 / best BM25
    /// (see docs/store.md); nil: cosine alone. `idx search --lexical-weight` overrides it.
    public var lexicalWeight: Float? = nil
}

/// The layout of an index folder: `CURRENT` names the live generation.
public enum IndexLayout {
    public static func currentFile(_ dir: String) -> String { dir + "/CURRENT" }
    static func generationName(_ n: Int) -> String { "gen-" + String(format: "%06d", n) }
    public static func manifestPath(_ dir: String, generation: String) -> String { dir + "/" + generation + "/manifest.json" }

    static func missing(_ dir: String) -> IdxError {
        IdxError("\(dir): no index here; build one with `idx index --corpus corpora/<name> --out \(dir)` (after idx ingest and idx train).")
    }

    /// Reads the live manifest; refuses formats newer than this binary.
    public static func readCurrent(_ dir: String) throws -> (generation: String, manifest: IndexManifest) {
        // Read bounded and only as regular files: CURRENT or a manifest may be a link to /dev/zero.
        let currentKind = FileKind(lstat: currentFile(dir))
        if currentKind == .missing { throw missing(dir) }
        guard currentKind == .regular, let cur = OutputPath.readSmallFile(currentFile(dir), limit: 4096) else {
            throw IdxError("\(currentFile(dir)): is \(FileKind.describe(currentFile(dir))) \(currentKind == .regular ? "longer than 4 KiB" : "instead of a regular file"); the index is corrupted: rebuild it with idx index.")
        }
        let generation = String(decoding: cur, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard generation.hasPrefix("gen-"), generation.dropFirst(4).allSatisfy({ $0.isASCII && $0.isNumber }), generation.count > 4 else {
            throw IdxError("\(currentFile(dir)): does not name a generation (\"\(IdxError.printable(generation))\"); the index is corrupted: rebuild it with idx index.")
        }
        let path = manifestPath(dir, generation: generation)
        guard FileKind(lstat: path) == .regular, let data = OutputPath.readSmallFile(path, limit: 256 << 20) else {
            throw IdxError("\(path): missing or not a regular file, though CURRENT names it; the index is corrupted: rebuild it with idx index.")
        }
        struct Probe: Decodable { var format: String?; var formatVersion: Int? }
        guard let probe = try? JSONDecoder().decode(Probe.self, from: data), probe.format == IndexManifest.format,
              let version = probe.formatVersion else {
            throw IdxError("\(path): not an idx index manifest (unreadable JSON or no format/formatVersion); rebuild the index with idx index.")
        }
        if version > IndexManifest.version {
            throw IdxError("\(path): index format version \(version) is newer than this idx understands (\(IndexManifest.version)); upgrade idx, or rebuild the index with this idx (idx index --out \(dir)).")
        }
        let manifest: IndexManifest
        do {
            manifest = try JSONDecoder().decode(IndexManifest.self, from: data)
        } catch {
            throw IdxError("\(path): manifest fields are invalid (\(error)); rebuild the index with idx index.")
        }
        try manifest.validate(path: path)
        return (generation, manifest)
    }
}
