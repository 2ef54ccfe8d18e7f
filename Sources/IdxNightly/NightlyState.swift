import Foundation
import IdxBase
import IdxEval

/// The nightly job's journal: `<state>/state.json`, rewritten atomically
/// (temp + fsync + rename) after every stage, so a run killed at any point
/// leaves either the previous or the next version, and the next run knows
/// exactly which stage to do again.
public struct NightlyState: Codable, Equatable {
    public var version = 1
    /// Every ingested inbox file, in corpus order (the corpus is their documents, file after file).
    public var sources: [IngestedSource] = []
    /// path → (size, mtime, XXH64), so an unchanged inbox costs a stat per file, not a read.
    public var hashCache: [String: CachedHash] = [:]
    /// What `idx search` serves now.
    public var published: Published?
    /// The run in progress (nil between runs). A run that finds one finishes it first.
    public var pending: PendingRun?
    /// Inbox files that could not be ingested, moved to `<state>/quarantine/` (nil in journals
    /// written before quarantine existed). `idx nightly --retry-quarantined` takes them back.
    public var quarantined: [QuarantinedFile]?

    public init() {}

    public struct IngestedSource: Codable, Equatable {
        public var origin: String      // inbox path or URL as configured
        public var stored: String      // the kept copy under <corpus>/sources/
        public var xxh64: String
        public var size: Int64
        public var run: String         // the run that ingested it
    }

    public struct QuarantinedFile: Codable, Equatable {
        public var origin: String      // inbox path or URL as configured
        public var stored: String      // where it lies now, under <state>/quarantine/
        public var reason: String
        public var run: String
    }

    public struct CachedHash: Codable, Equatable {
        public var size: Int64
        public var mtimeNanos: Int64
        public var xxh64: String
    }

    public struct Published: Codable, Equatable {
        public var run: String
        public var modelHash: String
        public var tokenizerHash: String
        public var documents: Int
        public var metrics: EvalSummary
    }

    public enum Stage: String, Codable, Comparable, Sendable {
        case collected   // new files copied under <corpus>/sources/, recorded here
        case ingested    // <corpus>/current holds every source's documents
        case trained     // the candidate model is complete
        case indexed     // the candidate index generation is complete
        case evaluated   // metrics and the gate's decision are recorded
        static let order: [Stage] = [.collected, .ingested, .trained, .indexed, .evaluated]
        public static func < (a: Stage, b: Stage) -> Bool { order.firstIndex(of: a)! < order.firstIndex(of: b)! }
    }

    public struct PendingRun: Codable, Equatable {
        public var run: String
        public var stage: Stage
        public var newSources: [IngestedSource]
        public var trainFromScratch: Bool
        public var forced: Bool
        public var documents: Int?          // corpus size after ingest
        public var candidateModelHash: String?
        public var modelChanged: Bool?
        public var indexMode: String?        // "generation" (re-embedded) or "segment" (new documents appended)
        public var metrics: EvalSummary?
        public var gate: GateDecision?
    }

    public static func load(_ path: String) throws -> NightlyState {
        guard let data = FileManager.default.contents(atPath: path) else { return NightlyState() }
        do {
            return try JSONDecoder().decode(NightlyState.self, from: data)
        } catch {
            throw IdxError("\(path): the nightly journal is unreadable (\(error)); it is only ever replaced whole, so this is outside damage: restore it from a backup, or move it away to start over (the next run re-ingests the inbox).")
        }
    }

    public func save(_ path: String) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try enc.encode(self), to: path)
    }
}

/// The nightly job's lock (`<state>/nightly.lock`).
public typealias NightlyLock = ProcessLock

/// The publish gate: the candidate must not lose more than `maxKnnDrop` kNN
/// precision against what is published, and its seed ratio must exceed `minSeedRatio`.
public struct GateDecision: Codable, Equatable {
    public var pass: Bool
    public var reasons: [String]

    public static func judge(candidate: EvalSummary, published: EvalSummary?, maxKnnDrop: Double,
                             minSeedRatio: Double) -> GateDecision {
        var reasons = [String]()
        var pass = true
        if candidate.seedRatio > minSeedRatio {
            reasons.append(String(format: "seed ratio %.3f > %.3f", candidate.seedRatio, minSeedRatio))
        } else {
            pass = false
            reasons.append(String(format: "seed ratio %.3f is not above %.3f", candidate.seedRatio, minSeedRatio))
        }
        if let published {
            let floor = published.knnPrecision - maxKnnDrop
            // A tiny epsilon so that "no more than 0.01 below" holds at exactly 0.01 despite rounding.
            if candidate.knnPrecision >= floor - 1e-12 {
                reasons.append(String(format: "kNN precision %.4f >= %.4f (published %.4f - %.4f)",
                                      candidate.knnPrecision, floor, published.knnPrecision, maxKnnDrop))
            } else {
                pass = false
                reasons.append(String(format: "kNN precision %.4f is below %.4f (published %.4f - %.4f)",
                                      candidate.knnPrecision, floor, published.knnPrecision, maxKnnDrop))
            }
        } else {
            reasons.append(String(format: "kNN precision %.4f (nothing published yet to compare with)", candidate.knnPrecision))
        }
        return GateDecision(pass: pass, reasons: reasons)
    }
}
