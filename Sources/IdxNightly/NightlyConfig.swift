import Foundation
import IdxBase
import IdxCorpus
import IdxProjection

/// Every setting of `idx nightly`. Each comes from (in order of precedence) a
/// command-line flag, `idx.toml`, or the default below; `NightlySettings.all` declares each
/// setting's key, flag and validation, and `idx.example.toml` documents every key. Relative paths in a config file (and the defaults, when a config file
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

    /// Reads the config file `path` over the defaults, its relative paths resolved against its
    /// folder. Unknown sections and keys are errors (NightlySettings).
    public static func load(_ path: String) throws -> NightlyConfig {
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return try NightlySettings.apply(TOMLDocument(contentsOfFile: path), to: NightlyConfig()).resolved(against: folder)
    }

    /// The settings of TOML `text` over `base`; `source` names the text in errors.
    public static func apply(toml text: String, source: String, to base: NightlyConfig) throws -> NightlyConfig {
        try NightlySettings.apply(TOMLDocument(parsing: text, source: source), to: base)
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
}
