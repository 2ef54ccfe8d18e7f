import Foundation
import XCTest
import IdxBase
import IdxCorpus
import IdxStore
import IdxNightly

/// The nightly job end to end on tiny corpora (cut from the invented sample), a
/// tiny model and few steps: real ingest, real `idx train` child processes, the
/// real store. Only the clock is a test double.
final class NightlyJobTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    var dir = ""
    var clockSeconds = 1_790_000_000.0

    /// The idx executable the test target was built with.
    static var idxBinary: String {
        var candidates = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path + "/idx"]
        for b in Bundle.allBundles { candidates.append(b.bundleURL.deletingLastPathComponent().path + "/idx") }
        candidates.append(root + "/.build/release/idx")
        candidates.append(root + "/.build/debug/idx")
        let fm = FileManager.default
        return candidates.filter { fm.isExecutableFile(atPath: $0) }.max {
            let a = (try? fm.attributesOfItem(atPath: $0)[.modificationDate] as? Date) ?? .distantPast
            let b = (try? fm.attributesOfItem(atPath: $1)[.modificationDate] as? Date) ?? .distantPast
            return a < b
        } ?? candidates[0]
    }

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("idx-nightly-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir + "/inbox", withIntermediateDirectories: true)
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: Self.idxBinary), "idx binary not found: \(Self.idxBinary)")
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// Rows [from, to) of the sample (data rows, header kept) as a CSV in the inbox.
    func writeInbox(_ name: String, rows: Range<Int>) throws {
        let text = try String(contentsOfFile: Self.root + "/corpora/sample/movies.csv", encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        let body = [lines[0]] + lines[1...].enumerated().filter { rows.contains($0.offset) }.map(\.element)
        try (body.joined(separator: "\n") + "\n").write(toFile: dir + "/inbox/" + name, atomically: true, encoding: .utf8)
    }

    func config() -> NightlyConfig {
        var c = NightlyConfig()
        c.inbox = [dir + "/inbox"]
        c.corpus = dir + "/corpora/nightly"
        c.model = dir + "/models/nightly"
        c.index = dir + "/indexes/nightly"
        c.runs = dir + "/runs"
        c.state = dir + "/state"
        c.steps = 20
        c.vocabSize = 400
        c.trainArgs = ["--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32", "--batch", "8", "--threads", "1"]
        c.seedTest = Self.root + "/corpora/seed-test.tsv"
        c.k = 5
        c.minSeedRatio = 0        // a 20-step model need not separate; the gate tests set their own
        c.maxKnnDrop = 1
        return c
    }

    func job(_ c: NightlyConfig) -> NightlyJob {
        NightlyJob(config: c, stages: .standard(idx: Self.idxBinary), now: { [unowned self] in
            clockSeconds += 86_400  // one night later at every call
            return Date(timeIntervalSince1970: clockSeconds)
        })
    }

    func current(_ c: NightlyConfig) throws -> String {
        try String(contentsOfFile: c.index + "/CURRENT", encoding: .utf8)
    }

    func testSecondRunIsNoOpAndNewFileIsPickedUp() throws {
        let c = config()
        try writeInbox("a.csv", rows: 0 ..< 120)
        let first = try job(c).run()
        XCTAssertEqual(first.decision, .published, first.message)
        XCTAssertEqual(first.counts.newFiles, 1)
        let served = try VectorIndexReader(directory: c.index)
        XCTAssertEqual(served.count, first.counts.documents)
        XCTAssertTrue(FileManager.default.fileExists(atPath: first.reportPath))

        // Nothing new: nothing done, quickly, and the served generation is untouched.
        let gen = try current(c)
        let stateBefore = try NightlyState.load(c.state + "/state.json")
        let t = Date()
        let second = try job(c).run()
        XCTAssertLessThan(Date().timeIntervalSince(t), 1.0)
        XCTAssertEqual(second.decision, .nothingNew)
        XCTAssertTrue(second.message.contains("nothing new"))
        XCTAssertEqual(try current(c), gen)
        XCTAssertEqual(try NightlyState.load(c.state + "/state.json").sources, stateBefore.sources)
        XCTAssertNil(second.candidate)

        // The same content under another name is still nothing new.
        try FileManager.default.copyItem(atPath: dir + "/inbox/a.csv", toPath: dir + "/inbox/a-copy.csv")
        XCTAssertEqual(try job(c).run().decision, .nothingNew)

        // A new file: ingested with the published tokenizer, trained on, indexed, published.
        try writeInbox("b.csv", rows: 120 ..< 200)
        let third = try job(c).run()
        XCTAssertEqual(third.decision, .published, third.message)
        XCTAssertEqual(third.counts.newFiles, 1)
        XCTAssertEqual(third.inputs.first { $0.origin.hasSuffix("b.csv") }?.status, "new")
        XCTAssertEqual(third.inputs.first { $0.origin.hasSuffix("a.csv") }?.status, "already ingested")
        XCTAssertGreaterThan(third.counts.newDocuments, 0)
        XCTAssertEqual(third.counts.indexMode, "generation")  // the model changed: everything re-embedded
        let now = try VectorIndexReader(directory: c.index)
        XCTAssertEqual(now.count, third.counts.documents)
        XCTAssertGreaterThan(now.count, served.count)
        XCTAssertNotEqual(try current(c), gen)
        let corpus = try CorpusReader(directory: c.corpus + "/current")
        XCTAssertEqual(corpus.tokenizerHash, served.tokenizerHash)  // the model's tokenizer was kept
        XCTAssertEqual(try NightlyState.load(c.state + "/state.json").sources.count, 2)
    }

    func testNewDocumentsBecomeASegmentWhenTheModelIsUnchanged() throws {
        var c = config()
        try writeInbox("a.csv", rows: 0 ..< 100)
        XCTAssertEqual(try job(c).run().decision, .published)
        c.steps = 0  // no training: same model, so only the new documents are embedded
        try writeInbox("b.csv", rows: 100 ..< 150)
        let r = try job(c).run()
        XCTAssertEqual(r.decision, .published, r.message)
        XCTAssertEqual(r.counts.indexMode, "segment")
        let reader = try VectorIndexReader(directory: c.index)
        XCTAssertEqual(reader.manifest.segments.count, 2)
        XCTAssertEqual(reader.count, r.counts.documents)
    }

    func testFailingGateKeepsThePublishedGeneration() throws {
        var c = config()
        try writeInbox("a.csv", rows: 0 ..< 120)
        XCTAssertEqual(try job(c).run().decision, .published)
        let gen = try current(c)
        let before = try VectorIndexReader(directory: c.index)
        let modelBefore = try XXHash64.hashFile(at: c.model + "/model.safetensors").hash
        c.minSeedRatio = 1e9  // cannot hold
        try writeInbox("b.csv", rows: 120 ..< 200)
        let r = try job(c).run()
        XCTAssertEqual(r.decision, .rejected)
        XCTAssertEqual(r.gate?.pass, false)
        XCTAssertTrue(r.message.contains("seed ratio"), r.message)
        XCTAssertEqual(try current(c), gen)
        let after = try VectorIndexReader(directory: c.index)
        XCTAssertEqual(after.count, before.count)
        XCTAssertEqual(after.manifest, before.manifest)
        XCTAssertEqual(try XXHash64.hashFile(at: c.model + "/model.safetensors").hash, modelBefore)
        // Only the served model's immutable copy is kept (the rejected candidate's is gone).
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: c.model + ".versions"),
                       [URL(fileURLWithPath: after.manifest.modelDirectory).lastPathComponent])
        // The report says why, and the JSON on disk says the same.
        let saved = try JSONDecoder().decode(NightlyJob.Report.self, from: Data(contentsOf: URL(fileURLWithPath: r.reportPath)))
        XCTAssertEqual(saved.decision, .rejected)
        XCTAssertNotNil(saved.candidate)
        XCTAssertNil(try NightlyState.load(c.state + "/state.json").pending)
        // A kNN drop beyond the allowance fails too, with a published model to compare with.
        c.minSeedRatio = 0
        c.maxKnnDrop = -1  // demands a gain of a whole 1.0
        try writeInbox("c.csv", rows: 200 ..< 240)
        let r2 = try job(c).run()
        XCTAssertEqual(r2.decision, .rejected)
        XCTAssertTrue(r2.message.contains("kNN precision"), r2.message)
        XCTAssertEqual(try current(c), gen)
    }

    func testStaleLockIsRecoveredAndALiveOneRefused() throws {
        let c = config()
        try writeInbox("a.csv", rows: 0 ..< 80)
        try FileManager.default.createDirectory(atPath: c.state, withIntermediateDirectories: true)
        // A live holder: refused, nothing done.
        let held = try NightlyLock(path: c.state + "/nightly.lock")
        XCTAssertThrowsError(try job(c).run()) { XCTAssertTrue("\($0)".contains("another idx nightly run"), "\($0)") }
        held.release()
        // A dead holder (killed with its lock file written): taken over.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "echo \"$$ $(cut -d' ' -f22 /proc/$$/stat) 2026-01-01T00:00:00Z\" > '\(c.state)/nightly.lock'; kill -9 $$"]
        try p.run()
        p.waitUntilExit()
        let r = try job(c).run()
        XCTAssertEqual(r.decision, .published, r.message)
        XCTAssertNotNil(r.staleLockFrom)
    }

    /// Runs `idx nightly` as a child process with the given config, killed with
    /// SIGKILL right after `stage` was journaled.
    func runKilled(after stage: String, _ c: NightlyConfig) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.idxBinary)
        var args = ["nightly", "--config", dir + "/empty.toml", "--corpus", c.corpus, "--model", c.model,
                    "--index", c.index, "--runs", c.runs, "--state", c.state, "--steps", String(c.steps),
                    "--vocab-size", String(c.vocabSize), "--seed-test", c.seedTest, "--k", String(c.k),
                    "--min-seed-ratio", String(c.minSeedRatio), "--max-knn-drop", String(c.maxKnnDrop)]
        for i in c.inbox { args += ["--inbox", i] }
        for a in c.trainArgs { args.append("--train-arg=\(a)") }
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(["IDX_NIGHTLY_KILL_AFTER": stage]) { $1 }
        p.standardError = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return p
    }

    func testRunKilledAtEveryStageConverges() throws {
        try "".write(toFile: dir + "/empty.toml", atomically: true, encoding: .utf8)
        let c = config()
        try writeInbox("a.csv", rows: 0 ..< 100)
        XCTAssertEqual(try job(c).run().decision, .published)
        let gen = try current(c)
        let served = try VectorIndexReader(directory: c.index).count
        var names = ["b.csv", "c.csv", "d.csv", "e.csv", "f.csv", "g.csv"]
        var start = 100
        for stage in ["collected", "ingested", "trained", "indexed", "evaluated", "published"] {
            let name = names.removeFirst()
            try writeInbox(name, rows: start ..< start + 30)
            start += 30
            let p = try runKilled(after: stage, c)
            XCTAssertEqual(p.terminationReason, .uncaughtSignal, stage)
            XCTAssertEqual(p.terminationStatus, SIGKILL, stage)
            // Killed: the published index still serves, the journal holds the pending stage.
            let state = try NightlyState.load(c.state + "/state.json")
            XCTAssertEqual(state.pending?.stage.rawValue, stage == "published" ? "evaluated" : stage)
            let reader = try VectorIndexReader(directory: c.index)
            XCTAssertGreaterThanOrEqual(reader.count, served, stage)
            // The next run (which takes over the dead run's lock) finishes the work.
            let r = try job(c).run()
            XCTAssertEqual(r.decision, .published, "\(stage): \(r.message)")
            XCTAssertNotNil(r.resumed, stage)
            let after = try NightlyState.load(c.state + "/state.json")
            XCTAssertNil(after.pending, stage)
            XCTAssertTrue(after.sources.contains { $0.origin.hasSuffix(name) }, stage)
            let now = try VectorIndexReader(directory: c.index)
            XCTAssertEqual(now.count, try CorpusReader(directory: c.corpus + "/current").documentCount, stage)
            XCTAssertEqual(now.modelHash, after.published?.modelHash, stage)
            // And a run after that has nothing to do.
            XCTAssertEqual(try job(c).run().decision, .nothingNew, stage)
        }
        XCTAssertNotEqual(try current(c), gen)
    }

    func testInboxURLIsDownloadedAndIngested() throws {
        var c = config()
        try writeInbox("a.csv", rows: 0 ..< 90)
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: dir + "/inbox/a.csv")))
        try FileManager.default.removeItem(atPath: dir + "/inbox/a.csv")
        let server = try RangeHTTPServer(body: bytes)
        defer { server.stop() }
        server.setCuts([bytes.count / 3])  // the first transfer is cut: resumed within the run
        c.inbox = [dir + "/inbox", server.url.absoluteString]
        let r = try job(c).run()
        XCTAssertEqual(r.decision, .published, r.message)
        XCTAssertEqual(r.counts.newFiles, 1)
        XCTAssertEqual(r.counts.downloadedBytes, Int64(bytes.count))
        XCTAssertEqual(server.ranges.count, 2)
        XCTAssertEqual(try job(c).run().decision, .nothingNew)
        XCTAssertEqual(server.ranges.count, 2)  // a finished download is not fetched again
    }
}
