import CSupport
import Foundation
import IdxBase
import IdxCorpus
import IdxModel
import IdxStore
import IdxProjection
import IdxEval

/// The real stages of `idx nightly`: `idx train` as a child process (so
/// `--procs N` goes through the same launcher as by hand), the store's writer
/// for the candidate index, `idx eval`'s code for the gate, and a publish that
/// moves the candidate generation into the served index through `IndexCommit.adopt`.
///
/// Layout besides the configured paths:
///     <state>/candidate/model        the candidate model (a training checkpoint)
///     <state>/candidate/index        the candidate index (a complete index folder)
///     <model>.versions/<hash>/        immutable copies of published models; each index
///                                     generation's manifest names the one it was built with
extension NightlyStages {
    public static func standard(idx: String, log: @escaping (String) -> Void = { _ in }) -> NightlyStages {
        func candidateIndex(_ config: NightlyConfig) -> String { config.state + "/candidate/index" }
        return NightlyStages(
            train: { r in
                // A child process, not TrainingRun in process: `--procs N` must start N ranks of
                // the idx binary through mpirun (the same launcher as by hand), and a child is what
                // a killed nightly can end with it (ChildProcess), freeing the candidate's lock.
                let fm = FileManager.default
                var args = ["train", "--corpus", r.corpus, "--out", r.output, "--seed", String(r.seed)]
                var total = r.steps
                if let base = r.baseModel {
                    // Continue the published checkpoint: copy it, then resume for `steps` more.
                    try copyDirectory(base, to: r.output)
                    let step = try checkpointStep(r.output)
                    let (sum, overflow) = step.addingReportingOverflow(r.steps)
                    guard !overflow else {
                        throw IdxError("\(r.output)/state.json: step \(step) and \(r.steps) more steps overflow; the published checkpoint is damaged (set from_scratch = true).")
                    }
                    total = sum
                    args += ["--resume"]
                } else {
                    args += r.extraArgs
                }
                args += ["--steps", String(total), "--checkpoint-every", String(max(1, total))]
                if r.procs > 1 { args += ["--procs", String(r.procs)] }
                try runChild(idx, args, log: log)
                guard fm.fileExists(atPath: r.output + "/model.safetensors") else {
                    throw IdxError("idx train finished without writing \(r.output)/model.safetensors.")
                }
                return XXHash64.hex(try XXHash64.hashFile(at: r.output + "/model.safetensors").hash)
            },
            index: { r in
                let fm = FileManager.default
                let cfgState = URL(fileURLWithPath: r.model).deletingLastPathComponent().path  // <state>/candidate
                let out = cfgState + "/index"
                try? fm.removeItem(atPath: out)
                let model = try EncoderModel.load(directory: r.model)
                let version = try keepVersion(of: r.model, hash: model.modelHash, published: r.publishedModel)
                let corpus = try CorpusReader(directory: r.corpus)
                let tokens = try corpus.readTokens()
                try model.checkVocabulary(tokens, source: r.corpus)
                let meta = try corpus.readMetadata()
                var range = 0 ..< tokens.count
                var append = false
                if !r.modelChanged, r.publishedDocuments > 0, fm.fileExists(atPath: r.published + "/CURRENT") {
                    // Same model: the published generation plus a segment of the new documents.
                    try cloneIndex(r.published, to: out)
                    range = r.publishedDocuments ..< tokens.count
                    append = true
                }
                if range.isEmpty { return append ? "segment (no new documents)" : "generation" }
                let (vectors, _) = CorpusEmbedder(batchSize: 64).embed(model, tokens, range: range)
                let provenance = IndexProvenance(modelHash: model.modelHash, tokenizerHash: model.tokenizerHash,
                                                 modelDirectory: ModelPath.recorded(version, index: out),
                                                 maxTokens: model.trainedMaxTokens, source: r.corpus)
                _ = try VectorIndexWriter.write(directory: out, embeddings: vectors, dimension: model.config.dModel,
                                                metadata: Array(meta[range]), ids: range.map { Int64($0) },
                                                provenance: provenance, append: append, standardize: false)
                return append ? "segment" : "generation"
            },
            evaluate: { model, r, config in
                let cfgState = URL(fileURLWithPath: model).deletingLastPathComponent().path
                var o = EvalRun.Options(index: cfgState + "/index", model: nil,
                                        validation: config.validation.isEmpty ? nil : config.validation,
                                        seedTest: config.seedTest)
                o.k = config.k
                let report = try EvalRun.run(o)
                log(EvalRun.table(report).split(separator: "\n").map { "nightly: eval: " + $0 }.joined(separator: "\n"))
                return report.summary
            },
            publish: { model, r, config in
                let cfgState = URL(fileURLWithPath: model).deletingLastPathComponent().path
                try IndexCommit.adopt(from: cfgState + "/index", into: config.index)
                // The model folder humans and the next run continue from (atomic exchange).
                if FileManager.default.fileExists(atPath: model) {
                    let staged = AtomicFile.temporarySibling(of: config.model)
                    try copyDirectory(model, to: staged)
                    try AtomicFile.publishDirectory(staged, at: config.model)
                }
                try? FileManager.default.removeItem(atPath: cfgState + "/index")
                collectModelVersions(index: config.index, model: config.model)
                if let method = config.mapProjection {
                    // The served map follows the new generation. A failure here leaves the publish
                    // standing (idx serve then draws a PCA computed at load) and is logged.
                    do {
                        let reader = try VectorIndexReader(directory: config.index)
                        try AttachedProjection.compute(method, of: reader).attach(to: reader)
                        log("nightly: map: \(method.rawValue) attached to \(reader.generation)")
                    } catch {
                        log("nightly: map: the \(method.rawValue) projection failed (\(error)); idx serve will draw a PCA")
                    }
                }
            },
            discard: { r in
                let cfgState = URL(fileURLWithPath: r.model).deletingLastPathComponent().path
                try? FileManager.default.removeItem(atPath: cfgState + "/index")
                collectModelVersions(index: r.published, model: r.publishedModel)
            },
            modelHash: { dir in
                guard let (h, _) = try? XXHash64.hashFile(at: dir + "/model.safetensors") else { return nil }
                return XXHash64.hex(h)
            }
        )
    }

    /// The immutable copy `<published model>.versions/<hash>/` of a model, made once (its path
    /// relative when `published` is, so that the index records it relative).
    static func keepVersion(of model: String, hash: String, published: String) throws -> String {
        var base = published
        while base.count > 1 && base.hasSuffix("/") { base.removeLast() }
        let dir = base + ".versions/" + hash
        if FileManager.default.fileExists(atPath: dir + "/model.safetensors") { return dir }
        let staged = AtomicFile.temporarySibling(of: dir)
        try copyDirectory(model, to: staged)
        try? FileManager.default.removeItem(atPath: dir)
        try AtomicFile.rename(staged, to: dir)
        return dir
    }

    /// Removes the model versions no generation of the served index names (a rejected
    /// candidate's, or ones older than the generations the store keeps).
    static func collectModelVersions(index: String, model: String) {
        let fm = FileManager.default
        let versions = URL(fileURLWithPath: model).standardizedFileURL.path + ".versions"
        guard let names = try? fm.contentsOfDirectory(atPath: versions) else { return }
        var used = Set<String>()
        for e in (try? fm.contentsOfDirectory(atPath: index)) ?? [] where e.hasPrefix("gen-") {
            if let data = fm.contents(atPath: IndexLayout.manifestPath(index, generation: e)),
               let m = try? JSONDecoder().decode(IndexManifest.self, from: data) {
                used.insert(URL(fileURLWithPath: ModelPath.resolve(m.modelDirectory, index: index)).standardizedFileURL.path)
            }
        }
        for n in names where !n.hasPrefix(".") && !used.contains(versions + "/" + n) {
            try? fm.removeItem(atPath: versions + "/" + n)
        }
    }

    /// A copy of an index folder whose segments are hard links (they are immutable).
    static func cloneIndex(_ from: String, to: String) throws {
        let fm = FileManager.default
        let (generation, _) = try IndexLayout.readCurrent(from)
        try fm.createDirectory(atPath: to + "/segments", withIntermediateDirectories: true)
        for s in try fm.contentsOfDirectory(atPath: from + "/segments") where s.hasSuffix(".idxseg") || s.hasSuffix(".idxlex") {
            if link(from + "/segments/" + s, to + "/segments/" + s) != 0 {
                try fm.copyItem(atPath: from + "/segments/" + s, toPath: to + "/segments/" + s)
            }
        }
        try fm.copyItem(atPath: from + "/" + generation, toPath: to + "/" + generation)
        try fm.copyItem(atPath: IndexLayout.currentFile(from), toPath: IndexLayout.currentFile(to))
    }

    static func copyDirectory(_ from: String, to: String) throws {
        let fm = FileManager.default
        try? fm.removeItem(atPath: to)
        try AtomicFile.createParent(of: to)
        do { try fm.copyItem(atPath: from, toPath: to) } catch {
            throw IdxError("cannot copy \(from) to \(to): \(error.localizedDescription)")
        }
    }

    static func checkpointStep(_ dir: String) throws -> Int {
        struct S: Decodable { var step: Int }
        guard let data = FileManager.default.contents(atPath: dir + "/state.json"),
              let s = try? JSONDecoder().decode(S.self, from: data) else {
            throw IdxError("\(dir)/state.json: missing or unreadable; the published model is not a training checkpoint, so it cannot be continued (set from_scratch = true).")
        }
        guard s.step >= 0 else {
            throw IdxError("\(dir)/state.json: step \(s.step) is negative, which no training writes; the published checkpoint is damaged (set from_scratch = true).")
        }
        return s.step
    }

    /// Runs `idx <args>`; its stderr lines are passed on; a non-zero exit is an error.
    static func runChild(_ idx: String, _ args: [String], log: (String) -> Void) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: idx)
        p.arguments = args
        // The child dies with this process: a nightly killed mid-training must not leave an
        // `idx train` running on (and locking) the candidate model the next run retrains.
        p.environment = ProcessInfo.processInfo.environment.merging([ChildProcess.parentVariable: String(getpid())]) { $1 }
        // At a terminal the child draws its own progress (rate, ETA) on our stderr;
        // otherwise (cron, tests) its last lines are passed on after it ends.
        let interactive = idx_isatty(2) == 1
        let errPipe = Pipe()
        p.standardError = interactive ? FileHandle.standardError : errPipe
        p.standardOutput = FileHandle.nullDevice
        log("nightly: $ idx " + args.joined(separator: " "))
        do { try p.run() } catch {
            throw IdxError("\(idx): cannot start idx for `\(args.first ?? "")`: \(error.localizedDescription).")
        }
        let err = interactive ? Data() : errPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: err, as: UTF8.self)
        for line in text.split(separator: "\n").suffix(5) { log("nightly:   " + (line.split(separator: "\r").last.map(String.init) ?? "")) }
        guard p.terminationReason == .exit, p.terminationStatus == 0 else {
            let last = text.split(separator: "\n").last.map(String.init) ?? "its error is printed above"
            throw IdxError("`idx \(args.joined(separator: " "))` failed (exit \(p.terminationStatus)): \(last)")
        }
    }
}
