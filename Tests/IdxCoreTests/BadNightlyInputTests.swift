import Foundation
import XCTest
import IdxBase
import IdxCorpus
@testable import IdxNightly

/// Bad input, category "nightly": a bad inbox file is quarantined and the run goes on; a bad
/// setting fails before the first stage; nothing hangs; the lock never follows a link.
/// The stages here fail the test if reached, unless a case wants them.
final class BadNightlyInputTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws {
        dir = IngestTestSupport.tempDir(self)
        try FileManager.default.createDirectory(atPath: dir + "/inbox", withIntermediateDirectories: true)
    }

    func config() -> NightlyConfig {
        var c = NightlyConfig()
        c.inbox = [dir + "/inbox"]
        c.corpus = dir + "/corpora/nightly"
        c.model = dir + "/models/nightly"
        c.index = dir + "/indexes/nightly"
        c.runs = dir + "/runs"
        c.state = dir + "/state"
        c.seedTest = NightlyJobTests.root + "/corpora/seed-test.tsv"
        return c
    }

    /// A job whose stages must not run.
    func job(_ c: NightlyConfig) -> NightlyJob {
        let never: (String) -> Never = { stage in fatalError("the \(stage) stage ran") }
        let stages = NightlyStages(train: { _ in never("train") }, index: { _ in never("index") },
                                   evaluate: { _, _, _ in never("eval") }, publish: { _, _, _ in never("publish") },
                                   discard: { _ in never("discard") }, modelHash: { _ in nil })
        return NightlyJob(config: c, stages: stages)
    }

    /// Runs a job whose inbox holds only bad files: they are quarantined, nothing else happens.
    func assertQuarantined(_ name: String, reason: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let report = try job(config()).run()
        XCTAssertEqual(report.decision, .nothingNew, report.message, file: file, line: line)
        XCTAssertEqual(report.quarantined.map { URL(fileURLWithPath: $0.origin).lastPathComponent }, [name], file: file, line: line)
        XCTAssertTrue(report.quarantined.first?.reason.contains(reason) == true, "\(report.quarantined)", file: file, line: line)
        XCTAssertEqual(FileKind(lstat: dir + "/inbox/" + name), .missing, "still in the inbox", file: file, line: line)
        XCTAssertNotEqual(FileKind(lstat: report.quarantined[0].stored), .missing, file: file, line: line)
        let state = try NightlyState.load(dir + "/state/state.json")
        XCTAssertEqual(state.quarantined?.count, 1, file: file, line: line)
        XCTAssertNil(state.pending, "a bad file must never be journaled into a run", file: file, line: line)
        XCTAssertTrue(try job(config()).status().contains(name), file: file, line: line)
    }

    /// Continuing the published model reads its state.json's step, which no checksum covers:
    /// a negative step, or one that overflows with the night's steps, is an error naming the
    /// file before any `idx train` starts (an overflow once trapped the nightly).
    func testPublishedCheckpointWithALyingStepIsAnError() throws {
        let base = dir + "/models/nightly"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        let train = NightlyStages.standard(idx: "/nonexistent/idx").train
        for (step, says) in [("-1", "is negative"), ("\(Int.max)", "overflow")] {
            try Data("{\"step\": \(step)}".utf8).write(to: URL(fileURLWithPath: base + "/state.json"))
            let r = NightlyStages.TrainRequest(corpus: dir + "/corpora/nightly", baseModel: base, output: dir + "/state/candidate/model",
                                               steps: 10, seed: 1, procs: 1, extraArgs: [])
            XCTAssertThrowsError(try train(r), step) { e in
                let m = (e as? IdxError)?.message ?? "\(e)"
                XCTAssertTrue(m.contains("state.json: step") && m.contains(says), m)
            }
        }
    }

    func testEmptyInboxFileIsQuarantined() throws {
        IngestTestSupport.write("", to: dir + "/inbox/empty.csv")
        try assertQuarantined("empty.csv", reason: "empty")
    }

    func testHTMLInboxFileIsQuarantined() throws {
        IngestTestSupport.write("<html><body>Moved</body></html>\n", to: dir + "/inbox/page.csv")
        try assertQuarantined("page.csv", reason: "no \"description\" column")
    }

    func testSymlinkToEtcPasswdIsQuarantined() throws {
        try FileManager.default.createSymbolicLink(atPath: dir + "/inbox/pw.csv", withDestinationPath: "/etc/passwd")
        try assertQuarantined("pw.csv", reason: "symbolic link to /etc/passwd")
    }

    func testSymlinkToDevZeroIsQuarantinedWithoutReadingIt() throws {
        try FileManager.default.createSymbolicLink(atPath: dir + "/inbox/zero.csv", withDestinationPath: "/dev/zero")
        try assertQuarantined("zero.csv", reason: "/dev/zero")
    }

    func testFIFOInTheInboxIsQuarantinedWithoutBlocking() throws {
        XCTAssertEqual(mkfifo(dir + "/inbox/pipe.csv", 0o644), 0)
        try assertQuarantined("pipe.csv", reason: "FIFO")
    }

    func testFolderNamedLikeACSVIsQuarantined() throws {
        try FileManager.default.createDirectory(atPath: dir + "/inbox/x.csv", withIntermediateDirectories: false)
        try assertQuarantined("x.csv", reason: "a folder")
    }

    func testFileOverMaxFileBytesIsQuarantined() throws {
        IngestTestSupport.write(IngestTestSupport.movies(50), to: dir + "/inbox/big.csv")
        var c = config()
        c.maxFileBytes = 1000
        let report = try job(c).run()
        XCTAssertEqual(report.quarantined.first?.reason.contains("max_file_bytes (1000)"), true, "\(report.quarantined)")
    }

    func testRetryQuarantinedPutsTheFileBack() throws {
        IngestTestSupport.write("", to: dir + "/inbox/empty.csv")
        _ = try job(config()).run()
        XCTAssertEqual(FileKind(lstat: dir + "/inbox/empty.csv"), .missing)
        let lines = try job(config()).retryQuarantined()
        XCTAssertEqual(lines.count, 1)
        XCTAssertEqual(FileKind(lstat: dir + "/inbox/empty.csv"), .regular)
        XCTAssertNil(try NightlyState.load(dir + "/state/state.json").quarantined)
    }

    func testGoodFilesOfABatchGoOnPastABadOne() throws {
        IngestTestSupport.write("", to: dir + "/inbox/a-empty.csv")
        IngestTestSupport.write(IngestTestSupport.movies(20), to: dir + "/inbox/b-good.csv")
        var trained = false
        struct Stop: Error {}
        let stages = NightlyStages(train: { r in
            // The batch reached training with the good file's documents only.
            XCTAssertEqual(try CorpusReader(directory: r.corpus).documentCount, 20)
            trained = true
            throw Stop()
        }, index: { _ in "" }, evaluate: { _, _, _ in fatalError() }, publish: { _, _, _ in }, discard: { _ in }, modelHash: { _ in nil })
        XCTAssertThrowsError(try NightlyJob(config: config(), stages: stages).run())
        XCTAssertTrue(trained)
        let state = try NightlyState.load(dir + "/state/state.json")
        XCTAssertEqual(state.quarantined?.map { URL(fileURLWithPath: $0.origin).lastPathComponent }, ["a-empty.csv"])
        XCTAssertEqual(state.pending?.newSources.count, 1)
    }

    func testJournaledSourceThatFailsIngestIsQuarantined() throws {
        // A journal left by an older idx: a run collected an empty file, then failed at ingest.
        IngestTestSupport.write(IngestTestSupport.movies(20), to: dir + "/inbox/good.csv")
        try FileManager.default.createDirectory(atPath: dir + "/corpora/nightly/sources", withIntermediateDirectories: true)
        IngestTestSupport.write("", to: dir + "/corpora/nightly/sources/00000-bad.csv")
        IngestTestSupport.write(IngestTestSupport.movies(20), to: dir + "/corpora/nightly/sources/00001-good.csv")
        var state = NightlyState()
        state.pending = .init(run: "R1", stage: .collected, newSources: [
            .init(origin: "bad.csv", stored: dir + "/corpora/nightly/sources/00000-bad.csv", xxh64: "1", size: 0, run: "R1"),
            .init(origin: "good.csv", stored: dir + "/corpora/nightly/sources/00001-good.csv", xxh64: "2", size: 1, run: "R1"),
        ], trainFromScratch: true, forced: false)
        try state.save(dir + "/state/state.json")
        struct Stop: Error {}
        let stages = NightlyStages(train: { _ in throw Stop() }, index: { _ in "" }, evaluate: { _, _, _ in fatalError() },
                                   publish: { _, _, _ in }, discard: { _ in }, modelHash: { _ in nil })
        XCTAssertThrowsError(try NightlyJob(config: config(), stages: stages).run()) { e in XCTAssertTrue(e is Stop, "\(e)") }
        let after = try NightlyState.load(dir + "/state/state.json")
        XCTAssertEqual(after.pending?.stage, .ingested)
        XCTAssertEqual(after.pending?.newSources.map(\.origin), ["good.csv"])
        XCTAssertEqual(after.quarantined?.map(\.origin), ["bad.csv"])
    }

    func testMissingSeedTestFailsBeforeTheFirstStage() throws {
        IngestTestSupport.write(IngestTestSupport.movies(20), to: dir + "/inbox/a.csv")
        var c = config()
        c.seedTest = dir + "/nowhere/seed-test.tsv"
        assertRefused([dir + "/inbox"], naming: ["seed-test.tsv", "[eval] seed_test", "does not exist"]) { _ = try job(c).run() }
        XCTAssertEqual(FileKind(lstat: dir + "/corpora"), .missing, "a stage ran")
    }

    func testMissingValidationFailsBeforeTheFirstStage() throws {
        var c = config()
        c.validation = dir + "/held.csv"
        assertRefused([dir + "/inbox"], naming: ["held.csv", "[eval] validation"]) { _ = try job(c).run() }
    }

    func testModelPathOntoAForeignFolderIsRefused() throws {
        var c = config()
        c.model = dir + "/mine"
        try FileManager.default.createDirectory(atPath: c.model, withIntermediateDirectories: true)
        IngestTestSupport.write("keep\n", to: c.model + "/notes.txt")
        assertRefused([c.model], naming: ["mine", "notes.txt"]) { _ = try job(c).run() }
    }

    func testIndexPathOntoARegularFileIsRefused() throws {
        var c = config()
        c.index = dir + "/index-file"
        IngestTestSupport.write("keep\n", to: c.index)
        assertRefused([c.index], naming: ["index-file", "not a folder"]) { _ = try job(c).run() }
    }

    func testConfigFileThatIsAFIFODoesNotHang() {
        XCTAssertEqual(mkfifo(dir + "/idx.toml", 0o644), 0)
        assertRefused([dir], naming: ["idx.toml", "FIFO"]) { _ = try NightlyConfig.load(dir + "/idx.toml") }
    }

    func testConfigPathsResolveAgainstTheConfigFolder() throws {
        try FileManager.default.createDirectory(atPath: dir + "/etc", withIntermediateDirectories: true)
        IngestTestSupport.write("[inbox]\nsources = [\"in\", \"https://example.org/a.csv\"]\n[paths]\nstate = \"/abs/state\"\n", to: dir + "/etc/idx.toml")
        let c = try NightlyConfig.load(dir + "/etc/idx.toml")
        XCTAssertEqual(c.inbox, [dir + "/etc/in", "https://example.org/a.csv"])
        XCTAssertEqual(c.seedTest, dir + "/etc/corpora/seed-test.tsv")
        XCTAssertEqual(c.state, "/abs/state")
        XCTAssertEqual(c.validation, "")
    }

    func testConfigRejectsAZeroSizeLimit() {
        assertRefused([], naming: ["max_file_bytes", "at least 1"]) {
            _ = try NightlyConfig.apply(toml: "[inbox]\nmax_file_bytes = 0", source: "idx.toml", to: NightlyConfig())
        }
    }

    func testDownloadWithoutContentLengthIsBounded() throws {
        let body = [UInt8](repeating: 0x61, count: 200_000)
        let server = try RangeHTTPServer(body: body)
        defer { server.stop() }
        server.setOmitLength(true)
        var d = Downloader(attempts: 1, timeout: 10)
        d.maxBytes = 50_000
        assertRefused([], naming: ["max_file_bytes (50000 bytes)", "partial download was removed"]) {
            _ = try d.fetch(server.url, to: dir + "/dl/movies.csv")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/dl"), [])
    }

    func testDownloadAnnouncingMoreThanTheLimitIsRefused() throws {
        let server = try RangeHTTPServer(body: [UInt8](repeating: 0x61, count: 100_000))
        defer { server.stop() }
        var d = Downloader(attempts: 1, timeout: 10)
        d.maxBytes = 1000
        assertRefused([], naming: ["announces 100000 bytes"]) { _ = try d.fetch(server.url, to: dir + "/dl/movies.csv") }
    }

    func testNegativeNumbersAreValuesWithAClearMessage() {
        assertIdxRefuses(["nightly", "--k", "-5", "--state", dir + "/state"], watched: [dir], naming: ["--k must be at least 1"])
        assertIdxRefuses(["nightly", "--steps", "-3", "--state", dir + "/state"], watched: [dir], naming: ["--steps must be at least 0"])
    }

    func testNightlyLockIsReleasedAfterAFailure() throws {
        var c = config()
        c.seedTest = dir + "/missing.tsv"
        XCTAssertThrowsError(try job(c).run())
        try NightlyLock(path: c.state + "/nightly.lock").release()  // free again
    }
}
