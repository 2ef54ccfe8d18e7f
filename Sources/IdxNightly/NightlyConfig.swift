import Foundation
import IdxBase
import IdxCorpus
import IdxProjection

/// Every setting of `idx nightly`. Each comes from (in order of precedence) a
/// command-line flag, `idx.toml`, or the default below; `idx.example.toml`
/// documents every key. Relative paths in a config file (and the defaults, when a config file
/// is read) are relative to the file's folder, so that a scheduler may start idx anywhere;
/// relative paths given as flags, or with no config file, to the working directory.
public struct NightlyConfig: Codable, Equatable {
    // [inbox]
    /// Folders (their *.csv files, sorted by name), CSV files, or http(s) URLs of CSV files.
    public var inbox: [String] = ["inbox"]
    /// Largest inbox file or download accepted; a larger one is quarantined.
    public var maxFileBytes: Int64 = NightlyConfig.defaultMaxFileBytes
    public static let defaultMaxFileBytes: Int64 = 1 << 30
    /// Accept symbolic links among the inbox folders' entries (their targets must be regular
    /// files); off, a link is quarantined: it may point at /etc/passwd or /dev/zero.
    public var followSymlinks = false
    // [paths]
    public var corpus = "corpora/nightly"   // one ingested corpus folder per inbox file, under here
    public var model = "models/nightly"     // the published model
    public var index = "indexes/nightly"    // the published index (what `idx search` reads)
    public var runs = "runs"                // one JSON report per run
    public var state = ".idx-nightly"       // lock, journal, downloads, candidates
    // [train]
    public var steps = 300
    public var fromScratch = false
    public var procs = 1
    public var seed = 1
    /// Vocabulary size of the tokenizer ingest trains for a model trained from scratch.
    public var vocabSize = Ingest.defaultVocabSize
    /// Documents as "Title. description" for a model trained from scratch (a continued model
    /// keeps what it was trained on).
    public var titles = false
    /// More flags for `idx train` on a fresh model (e.g. its size: ["--d-model", "64"]).
    public var trainArgs: [String] = []
    // [eval]
    /// CSV of held-out documents; "" = kNN precision leave-one-out on the index itself.
    public var validation = ""
    public var seedTest = "corpora/seed-test.tsv"
    public var k = 10
    // [gate]
    /// The candidate may lose at most this much kNN precision against the published model.
    public var maxKnnDrop = 0.01
    /// The candidate's seed-test ratio (inter / intra) must be above this.
    public var minSeedRatio = 1.0
    // [download]
    public var downloadAttempts = 4
    public var downloadTimeout = 60.0
    /// Longest one download may take in all, in seconds.
    public var downloadMaxSeconds = 3600.0
    /// The map idx serve draws: after publishing, project the new generation and attach it
    /// (`idx project --attach`); nil: none attached (idx serve then computes a PCA at load).
    public var mapProjection: ProjectionMethod? = nil

    public init() {}

    /// Every key `idx.toml` accepts: section → key → how to apply it.
    static let keys: [String: [String: (inout NightlyConfig, TOMLValue, String) throws -> Void]] = [
        "inbox": [
            "sources": { c, v, at in c.inbox = try strings(v, at) },
            "max_file_bytes": { c, v, at in c.maxFileBytes = Int64(try int(v, at, min: 1)) },
            "follow_symlinks": { c, v, at in c.followSymlinks = try bool(v, at) },
        ],
        "paths": [
            "corpus": { c, v, at in c.corpus = try string(v, at) },
            "model": { c, v, at in c.model = try string(v, at) },
            "index": { c, v, at in c.index = try string(v, at) },
            "runs": { c, v, at in c.runs = try string(v, at) },
            "state": { c, v, at in c.state = try string(v, at) },
        ],
        "train": [
            "steps": { c, v, at in c.steps = try int(v, at, min: 0) },
            "from_scratch": { c, v, at in c.fromScratch = try bool(v, at) },
            "procs": { c, v, at in c.procs = try int(v, at, min: 1) },
            "seed": { c, v, at in c.seed = try int(v, at, min: 0) },
            "vocab_size": { c, v, at in c.vocabSize = try int(v, at, min: 6) },
            "titles": { c, v, at in c.titles = try bool(v, at) },
            "args": { c, v, at in c.trainArgs = try strings(v, at) },
        ],
        "eval": [
            "validation": { c, v, at in c.validation = try string(v, at) },
            "seed_test": { c, v, at in c.seedTest = try string(v, at) },
            "k": { c, v, at in c.k = try int(v, at, min: 1) },
        ],
        "gate": [
            "max_knn_drop": { c, v, at in c.maxKnnDrop = try number(v, at) },
            "min_seed_ratio": { c, v, at in c.minSeedRatio = try number(v, at) },
        ],
        "download": [
            "attempts": { c, v, at in c.downloadAttempts = try int(v, at, min: 1) },
            "timeout_seconds": { c, v, at in c.downloadTimeout = try number(v, at) },
            "max_seconds": { c, v, at in c.downloadMaxSeconds = try number(v, at) },
        ],
        "map": ["projection": { c, v, at in c.mapProjection = try projection(string(v, at), at) }],
    ]

    /// Reads `path` over the defaults. Unknown sections and keys are errors (a typo
    /// must not silently fall back to a default).
    /// "none", "pca" or "tsne" ([map] projection, --map-projection).
    public static func projection(_ s: String, _ at: String) throws -> ProjectionMethod? {
        if s == "none" { return nil }
        guard let m = ProjectionMethod(rawValue: s) else {
            throw IdxError("\(at) must be \"none\", \"pca\" or \"tsne\", not \"\(s)\".")
        }
        return m
    }

    public static func load(_ path: String) throws -> NightlyConfig {
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return try apply(TOMLDocument(contentsOfFile: path), to: NightlyConfig()).resolved(against: folder)
    }

    /// Every relative path (inbox folders and files, not URLs; the paths; the eval files)
    /// made relative to `folder`.
    public func resolved(against folder: String) -> NightlyConfig {
        func r(_ p: String) -> String { p.isEmpty || p.hasPrefix("/") ? p : (folder.hasSuffix("/") ? folder : folder + "/") + p }
        var c = self
        c.inbox = inbox.map { let l = $0.lowercased(); return l.hasPrefix("http://") || l.hasPrefix("https://") ? $0 : r($0) }
        c.corpus = r(corpus); c.model = r(model); c.index = r(index); c.runs = r(runs); c.state = r(state)
        c.validation = r(validation); c.seedTest = r(seedTest)
        return c
    }

    public static func apply(_ doc: TOMLDocument, to base: NightlyConfig) throws -> NightlyConfig {
        var c = base
        for section in doc.sections.keys.sorted() {
            let entries = doc.sections[section]!
            guard let known = keys[section] else {
                if entries.isEmpty && section.isEmpty { continue }
                let what = section.isEmpty ? "top-level keys (\(entries.keys.sorted().joined(separator: ", ")))" : "section [\(section)]"
                throw IdxError("\(doc.source): unknown \(what); the sections are \(keys.keys.sorted().map { "[\($0)]" }.joined(separator: ", ")) (see idx.example.toml).")
            }
            for key in entries.keys.sorted() {
                guard let set = known[key] else {
                    throw IdxError("\(doc.location(section, key)): unknown key `\(key)` in [\(section)]; it takes \(known.keys.sorted().joined(separator: ", ")) (see idx.example.toml).")
                }
                try set(&c, entries[key]!, doc.location(section, key) + ": `\(key)`")
            }
        }
        return c
    }

    private static func string(_ v: TOMLValue, _ at: String) throws -> String {
        guard case let .string(s) = v else { throw IdxError("\(at) must be a string in quotes, not \(v.typeName).") }
        return s
    }
    private static func strings(_ v: TOMLValue, _ at: String) throws -> [String] {
        switch v {
        case let .strings(a): return a
        case let .string(s): return [s]
        default: throw IdxError("\(at) must be an array of strings, like [\"a\", \"b\"], not \(v.typeName).")
        }
    }
    private static func int(_ v: TOMLValue, _ at: String, min: Int) throws -> Int {
        guard case let .integer(i) = v else { throw IdxError("\(at) must be a whole number, not \(v.typeName).") }
        guard i >= min else { throw IdxError("\(at) must be at least \(min) (got \(i)).") }
        return i
    }
    private static func number(_ v: TOMLValue, _ at: String) throws -> Double {
        switch v {
        case let .integer(i): return Double(i)
        case let .float(d): return d
        default: throw IdxError("\(at) must be a number, not \(v.typeName).")
        }
    }
    private static func bool(_ v: TOMLValue, _ at: String) throws -> Bool {
        guard case let .bool(b) = v else { throw IdxError("\(at) must be true or false, not \(v.typeName).") }
        return b
    }
}
