import Foundation
import IdxBase
import IdxCorpus
import IdxModel
import IdxEval

/// The work of the stages the nightly job drives but other parts of idx own
/// (training, indexing, evaluation, the publish switch). `NightlyStages.standard`
/// (NightlyStages+Standard.swift) wires them to the real trainer and store.
public struct NightlyStages {
    public struct TrainRequest {
        public var corpus: String          // corpus folder (all documents)
        public var baseModel: String?      // continue from this model folder; nil = from scratch
        public var output: String          // write the candidate model folder here (absent on entry)
        public var steps: Int
        public var seed: Int
        public var procs: Int
        public var extraArgs: [String]
    }
    public struct IndexRequest {
        public var corpus: String
        public var model: String            // the candidate model folder
        public var published: String        // the published index folder (may not exist)
        public var publishedModel: String   // the published model folder (config.model)
        public var publishedDocuments: Int  // documents the published index holds (0 when none)
        public var modelChanged: Bool
    }
    /// Returns the candidate model's hash.
    public var train: (TrainRequest) throws -> String
    /// Builds the candidate (a new generation, or the published one plus a segment of the
    /// new documents when the model did not change), not visible to `idx search` yet.
    /// Returns "generation" or "segment".
    public var index: (IndexRequest) throws -> String
    /// `idx eval` of the candidate (model folder, index request), as the gate sees it.
    public var evaluate: (_ model: String, _ index: IndexRequest, _ config: NightlyConfig) throws -> EvalSummary
    /// The atomic switch: after it, `idx search` serves the candidate. Must be idempotent
    /// (a killed run repeats it).
    public var publish: (_ model: String, _ index: IndexRequest, _ config: NightlyConfig) throws -> Void
    /// Drops the candidate (gate failed); the published index keeps serving.
    public var discard: (_ index: IndexRequest) throws -> Void
    /// The model hash of a model folder (nil when there is none).
    public var modelHash: (_ model: String) -> String?

    public init(train: @escaping (TrainRequest) throws -> String, index: @escaping (IndexRequest) throws -> String,
                evaluate: @escaping (String, IndexRequest, NightlyConfig) throws -> EvalSummary,
                publish: @escaping (String, IndexRequest, NightlyConfig) throws -> Void,
                discard: @escaping (IndexRequest) throws -> Void, modelHash: @escaping (String) -> String?) {
        self.train = train; self.index = index; self.evaluate = evaluate; self.publish = publish
        self.discard = discard; self.modelHash = modelHash
    }
}

/// `idx nightly`: inbox → ingest → train → index → eval → gate → publish, with a
/// lock, a journal written after every stage (a killed run is finished by the
/// next), and a JSON report per run.
public struct NightlyJob {
    public var config: NightlyConfig
    public var stages: NightlyStages
    /// The clock (run ids and report times). Tests pass a fixed one.
    public var now: () -> Date
    /// Where lines for the person at the terminal go (stderr in the CLI).
    public var log: (String) -> Void
    /// Fault injection for the kill tests: `IDX_NIGHTLY_KILL_AFTER=<stage>` sends
    /// SIGKILL to this process right after that stage was journaled.
    var killAfter: String? = ProcessInfo.processInfo.environment["IDX_NIGHTLY_KILL_AFTER"]

    public init(config: NightlyConfig, stages: NightlyStages, now: @escaping () -> Date = Date.init,
                log: @escaping (String) -> Void = { _ in }) {
        self.config = config; self.stages = stages; self.now = now; self.log = log
    }

    public enum Decision: String, Codable {
        case nothingNew = "nothing-new"
        case published
        case rejected      // the gate failed: the published index keeps serving
        case failed        // an error stopped the run; the journal lets the next run continue
    }

    public struct Report: Codable {
        public var run: String
        public var startedAt: String
        public var finishedAt = ""
        public var seconds = 0.0
        public var decision: Decision = .failed
        public var message = ""
        public var resumed: String?              // "run X from stage S" when finishing an interrupted run
        public var staleLockFrom: String?
        public var config: NightlyConfig
        public var inputs: [Input] = []
        public var problems: [String] = []
        /// Files of this run moved to quarantine, with the reason.
        public var quarantined: [NightlyState.QuarantinedFile] = []
        public var counts = Counts()
        public var timings: [String: Double] = [:]
        public var candidate: EvalSummary?
        public var published: EvalSummary?
        public var gate: GateDecision?
        public var reportPath = ""

        public struct Input: Codable {
            public var origin: String
            public var xxh64: String
            public var size: Int64
            public var status: String   // "new", "already ingested", "duplicate of another inbox file"
        }
        public struct Counts: Codable {
            public var inboxFiles = 0
            public var newFiles = 0
            public var downloadedBytes: Int64 = 0
            public var documents = 0
            public var newDocuments = 0
            public var trainSteps = 0
            public var indexMode: String?
        }
    }

    var statePath: String { config.state + "/state.json" }
    var candidateModel: String { config.state + "/candidate/model" }
    var sourcesDir: String { config.corpus + "/sources" }
    var corpusCurrent: String { config.corpus + "/current" }

    /// Runs once. Returns the report (also written under `config.runs`); the
    /// decision says whether the run succeeded (`nothingNew`, `published`).
    public func run(forceTrain: Bool = false) throws -> Report {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let started = now()
        let lock = try NightlyLock(path: config.state + "/nightly.lock", now: started)
        defer { lock.release() }
        var state = try NightlyState.load(statePath)
        let runId = Self.runId(started)
        var report = Report(run: runId, startedAt: Self.iso(started), config: config)
        if let stale = lock.recoveredFrom {
            report.staleLockFrom = stale.description
            log("nightly: took over the stale lock of \(stale) (that process is gone)")
        }
        func finish(_ decision: Decision, _ message: String) throws -> Report {
            report.decision = decision
            report.message = message
            report.finishedAt = Self.iso(now())
            report.seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            report.published = state.published?.metrics
            report.reportPath = try writeReport(report)
            log("nightly: \(message) (report: \(report.reportPath))")
            return report
        }
        func timed<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
            let s = DispatchTime.now().uptimeNanoseconds
            defer { report.timings[name, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - s) / 1e9 }
            return try body()
        }
        func journal(_ stage: NightlyState.Stage) throws {
            state.pending!.stage = stage
            try state.save(statePath)
            if killAfter == stage.rawValue { kill(getpid(), SIGKILL) }
        }

        do {
            try preflight()
            // 1. The inbox: what is new?
            if let pending = state.pending {
                report.resumed = "run \(pending.run) from after stage \(pending.stage.rawValue)"
                log("nightly: finishing interrupted \(report.resumed!)")
                report.inputs = pending.newSources.map { .init(origin: $0.origin, xxh64: $0.xxh64, size: $0.size, status: "new (interrupted run)") }
                report.counts.newFiles = pending.newSources.count
            } else {
                let scan = try timed("inbox") {
                    var downloader = Downloader(attempts: config.downloadAttempts, timeout: config.downloadTimeout)
                    downloader.maxBytes = config.maxFileBytes
                    downloader.maxSeconds = config.downloadMaxSeconds
                    return try NightlyInbox.scan(config.inbox, downloads: config.state + "/downloads", downloader: downloader,
                                                 cache: &state.hashCache, maxFileBytes: config.maxFileBytes,
                                                 followSymlinks: config.followSymlinks,
                                                 skipOrigins: Set((state.quarantined ?? []).map(\.origin)))
                }
                report.problems = scan.problems
                for r in scan.rejected {
                    Self.quarantine(local: r.local, origin: r.origin, reason: r.reason, run: runId, into: quarantineDir,
                                    state: &state, report: &report, log: log)
                }
                // Forget cached hashes of files no longer in the inbox.
                let present = Set(scan.files.map(\.local))
                state.hashCache = state.hashCache.filter { present.contains($0.key) }
                report.counts.inboxFiles = scan.files.count
                report.counts.downloadedBytes = scan.downloads.reduce(0) { $0 + $1.bytes - $1.resumedFrom }
                var known = Set(state.sources.map(\.xxh64))
                var fresh = [NightlyInbox.File]()
                let configured = Set(config.inbox)
                for f in scan.files {
                    let status: String
                    if known.contains(f.xxh64) {
                        status = state.sources.contains { $0.xxh64 == f.xxh64 } ? "already ingested" : "duplicate of another inbox file"
                    } else if let why = Self.cannotIngest(f.local, maxBytes: config.maxFileBytes) {
                        // Checked before it is journaled: a bad file never enters a run.
                        if configured.contains(f.local) {
                            status = "skipped: \(why)"
                            report.problems.append(why)
                        } else {
                            status = "quarantined: \(why)"
                            Self.quarantine(local: f.local, origin: f.origin, reason: why, run: runId, into: quarantineDir,
                                            state: &state, report: &report, log: log)
                        }
                    } else {
                        status = "new"
                        known.insert(f.xxh64)
                        fresh.append(f)
                    }
                    report.inputs.append(.init(origin: f.origin, xxh64: f.xxh64, size: f.size, status: status))
                }
                report.counts.newFiles = fresh.count
                let haveModel = stages.modelHash(config.model) != nil
                if fresh.isEmpty && !forceTrain && (haveModel || state.sources.isEmpty) {
                    try state.save(statePath)  // keeps the hash cache warm
                    let what = (report.problems.isEmpty ? "" : "; \(report.problems.count) inbox problem(s), see the report")
                        + (report.quarantined.isEmpty ? "" : "; \(report.quarantined.count) file(s) quarantined (idx nightly --status)")
                    return try finish(.nothingNew, "nothing new in the inbox (\(scan.files.count) file(s), all ingested); nothing to do\(what)")
                }
                // Keep a copy of every new file (a hard link when possible) before journaling it,
                // so a resumed run does not depend on the inbox still holding it.
                var newSources = [NightlyState.IngestedSource]()
                try FileManager.default.createDirectory(atPath: sourcesDir, withIntermediateDirectories: true)
                for (i, f) in fresh.enumerated() {
                    let stored = sourcesDir + String(format: "/%05d-", state.sources.count + i) + f.xxh64 + ".csv"
                    try Self.keepCopy(of: f.local, at: stored, hardLink: f.downloaded)
                    newSources.append(.init(origin: f.origin, stored: stored, xxh64: f.xxh64, size: f.size, run: runId))
                }
                state.pending = .init(run: runId, stage: .collected, newSources: newSources,
                                      trainFromScratch: config.fromScratch || !haveModel, forced: forceTrain)
                try journal(.collected)
            }

            var pending = state.pending!
            let allSources = state.sources + pending.newSources
            let publishedDocs = state.published?.documents ?? 0

            // 2. Ingest every source into <corpus>/current, with the published model's tokenizer.
            if pending.stage < .ingested {
                let docs = try timed("ingest") { () throws -> Int in
                    let tokenizer = pending.trainFromScratch ? nil : config.model + "/tokenizer.json"
                    var options = Ingest.Options(inputs: allSources.map(\.stored), output: corpusCurrent,
                                                 tokenizerPath: tokenizer, vocabSize: config.vocabSize)
                    options.showProgress = false
                    options.titlesInText = pending.trainFromScratch ? config.titles : try EncoderModel.load(directory: config.model).titlesInText
                    do {
                        return try Ingest.run(options) { log("nightly: ingest: " + $0) }.documents
                    } catch let e as IdxError {
                        // A journaled source that cannot be ingested (a journal of an older idx, or a
                        // file damaged since): quarantine it and go on with the rest of the batch.
                        let bad = pending.newSources.compactMap { s in Self.cannotIngest(s.stored, maxBytes: config.maxFileBytes).map { (s, $0) } }
                        guard !bad.isEmpty else { throw e }
                        for (s, why) in bad {
                            Self.quarantine(local: s.stored, origin: s.origin, reason: why, run: pending.run, into: quarantineDir,
                                            state: &state, report: &report, log: log)
                        }
                        let dropped = Set(bad.map(\.0.stored))
                        state.pending!.newSources.removeAll { dropped.contains($0.stored) }
                        if state.pending!.newSources.isEmpty {
                            state.pending = nil
                            try state.save(statePath)
                            throw IdxError("every new file of run \(pending.run) was quarantined (idx nightly --status lists them); nothing else to do.")
                        }
                        pending = state.pending!
                        try state.save(statePath)
                        options.inputs = (state.sources + pending.newSources).map(\.stored)
                        return try Ingest.run(options) { log("nightly: ingest: " + $0) }.documents
                    }
                }
                state.pending!.documents = docs
                try journal(.ingested)
                pending = state.pending!
            }
            report.counts.documents = pending.documents ?? 0
            report.counts.newDocuments = max(0, (pending.documents ?? 0) - publishedDocs)

            // 3. Train: continue from the published model (or from scratch).
            let fm = FileManager.default
            if pending.stage < .trained {
                let hash = try timed("train") { () throws -> String in
                    try? fm.removeItem(atPath: candidateModel)
                    try AtomicFile.createParent(of: candidateModel)
                    return try stages.train(.init(corpus: corpusCurrent, baseModel: pending.trainFromScratch ? nil : config.model,
                                                  output: candidateModel, steps: config.steps, seed: config.seed,
                                                  procs: config.procs, extraArgs: config.trainArgs))
                }
                state.pending!.candidateModelHash = hash
                state.pending!.modelChanged = hash != state.published?.modelHash
                try journal(.trained)
                pending = state.pending!
            }
            report.counts.trainSteps = config.steps
            let indexRequest = NightlyStages.IndexRequest(corpus: corpusCurrent, model: candidateModel, published: config.index,
                                                          publishedModel: config.model,
                                                          publishedDocuments: pending.modelChanged == false ? publishedDocs : 0,
                                                          modelChanged: pending.modelChanged ?? true)

            // 4. Index: a new generation (model changed) or a segment of the new documents.
            if pending.stage < .indexed {
                let mode = try timed("index") { try stages.index(indexRequest) }
                state.pending!.indexMode = mode
                try journal(.indexed)
                pending = state.pending!
            }
            report.counts.indexMode = pending.indexMode

            // 5. Eval and the gate.
            if pending.stage < .evaluated {
                let metrics = try timed("eval") { try stages.evaluate(candidateModel, indexRequest, config) }
                state.pending!.metrics = metrics
                state.pending!.gate = GateDecision.judge(candidate: metrics, published: state.published?.metrics,
                                                         maxKnnDrop: config.maxKnnDrop, minSeedRatio: config.minSeedRatio)
                try journal(.evaluated)
                pending = state.pending!
            }
            report.candidate = pending.metrics
            report.gate = pending.gate

            // 6. Publish, or keep serving the published generation.
            let gate = pending.gate!
            if gate.pass {
                try timed("publish") { try stages.publish(candidateModel, indexRequest, config) }
                // (Kill point for the tests: served, but not yet journaled as done.)
                if killAfter == "published" { kill(getpid(), SIGKILL) }
                state.published = .init(run: pending.run, modelHash: pending.candidateModelHash ?? "",
                                        tokenizerHash: (try? WordLevelTokenizer(contentsOfFile: config.model + "/tokenizer.json").hash) ?? "",
                                        documents: pending.documents ?? 0, metrics: pending.metrics!)
            } else {
                try timed("publish") { try stages.discard(indexRequest) }
            }
            // The new files count as ingested either way: a rejected candidate's documents stay in the
            // corpus, and the next run that trains (new files, or --retrain) trains on them too.
            state.sources += pending.newSources
            state.pending = nil
            try state.save(statePath)
            try? fm.removeItem(atPath: candidateModel)
            if gate.pass {
                return try finish(.published, "published run \(pending.run): " + gate.reasons.joined(separator: "; "))
            }
            return try finish(.rejected, "gate failed, the published index keeps serving: " + gate.reasons.joined(separator: "; "))
        } catch {
            let message = (error as? IdxError)?.message ?? "\(error)"
            try? state.save(statePath)
            _ = try? finish(.failed, "failed: \(message)" + (state.pending != nil ? " (the next run continues from stage \(state.pending!.stage.rawValue))" : ""))
            throw error
        }
    }

    func writeReport(_ report: Report) throws -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        var path = config.runs + "/nightly-\(report.run).json"
        var n = 1
        while FileManager.default.fileExists(atPath: path) {
            n += 1
            path = config.runs + "/nightly-\(report.run)-\(n).json"
        }
        var r = report
        r.reportPath = path
        try AtomicFile.write(try enc.encode(r), to: path)
        return path
    }

    static func runId(_ d: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return f.string(from: d)
    }

    static func iso(_ d: Date) -> String { ISO8601DateFormatter().string(from: d) }

    /// A copy under a temporary name, renamed into place. Downloads (files idx owns, never
    /// edited in place) are hard-linked instead; an inbox file is copied, since a hard link
    /// would follow later edits of it.
    static func keepCopy(of path: String, at stored: String, hardLink: Bool) throws {
        if FileManager.default.fileExists(atPath: stored) { return }
        if hardLink && link(path, stored) == 0 { return }
        let tmp = AtomicFile.temporarySibling(of: stored)
        do {
            try FileManager.default.copyItem(atPath: path, toPath: tmp)
            try AtomicFile.rename(tmp, to: stored)
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw IdxError("\(path): cannot keep a copy at \(stored): \(error)")
        }
    }
}
