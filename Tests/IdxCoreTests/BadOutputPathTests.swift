import Foundation
import XCTest
import IdxBase
import IdxNightly

/// Bad input, category "output paths and writers": idx never replaces or removes what it
/// did not write, never writes through a link, a device or a FIFO, and refuses a second
/// writer of one folder. Each case asserts the exit status (or error), the culprit named in
/// the message, and the watched folders byte-identical before and after.
final class BadOutputPathTests: XCTestCase {
    var dir = ""
    var f: BadInput.Fixture { BadInput.fixture }

    override func setUpWithError() throws { dir = IngestTestSupport.tempDir(self) }

    /// A folder of the user's holding the CSV and other files.
    func userFolder() -> String {
        let data = dir + "/data"
        try! FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        IngestTestSupport.write(IngestTestSupport.movies(30), to: data + "/movies.csv")
        IngestTestSupport.write("keep me\n", to: data + "/notes.txt")
        return data
    }

    func testIngestOutOntoTheFolderHoldingItsInputIsRefused() {
        let data = userFolder()
        assertIdxRefuses(["ingest", data + "/movies.csv", "--out", data], watched: [data], naming: [data, "holds the input"])
    }

    func testIngestForceStillRefusesTheFolderHoldingItsInput() {
        let data = userFolder()
        assertIdxRefuses(["ingest", data + "/movies.csv", "--out", data, "--force"], watched: [data], naming: [data, "holds the input"])
    }

    func testIngestOutOntoAForeignFolderIsRefusedNamingAFile() {
        let data = userFolder()
        let other = dir + "/other"
        try! FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        IngestTestSupport.write("mine\n", to: other + "/thesis.tex")
        assertIdxRefuses(["ingest", data + "/movies.csv", "--out", other], watched: [other], naming: [other, "thesis.tex", "--force"])
    }

    func testIngestOutOntoASymlinkIsRefused() throws {
        let data = userFolder()
        let target = dir + "/target"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: target)
        assertIdxRefuses(["ingest", data + "/movies.csv", "--out", dir + "/link"], watched: [dir + "/link", target], naming: ["link", "symbolic link"])
    }

    func testIngestOutOntoARegularFileIsRefused() {
        let data = userFolder()
        assertIdxRefuses(["ingest", data + "/movies.csv", "--out", data + "/notes.txt"], watched: [data], naming: ["notes.txt", "not a folder"])
    }

    func testIngestForceOntoTheWorkingFolderIsRefused() {
        let data = userFolder()
        let work = dir + "/work"
        try! FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        IngestTestSupport.write("x\n", to: work + "/file")
        assertIdxRefuses(["ingest", data + "/movies.csv", "--out", ".", "--force"], cwd: work, watched: [work], naming: ["working folder"])
    }

    func testIngestReplacesItsOwnCorpusFolder() throws {
        // The positive twin of the refusals: a corpus folder idx wrote is replaced.
        let out = BadInput.copy(f.corpus, to: dir + "/corpus")
        let (status, stderr) = runIdx(["ingest", f.csv, "--out", out])
        XCTAssertEqual(status, 0, stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["corpus"])  // no lock or staging left
    }

    func testTrainOutOntoAForeignFolderIsRefused() {
        let data = userFolder()
        assertIdxRefuses(["train", "--corpus", f.corpus, "--out", data, "--steps", "1"], watched: [data], naming: [data, "notes.txt"])
    }

    func testTrainOutOntoARegularFileIsRefused() {
        let data = userFolder()
        assertIdxRefuses(["train", "--corpus", f.corpus, "--out", data + "/notes.txt", "--steps", "1"], watched: [data], naming: ["notes.txt", "not a folder"])
    }

    func testTrainOutOntoASymlinkIsRefused() throws {
        let data = userFolder()
        try FileManager.default.createSymbolicLink(atPath: dir + "/m", withDestinationPath: data)
        assertIdxRefuses(["train", "--corpus", f.corpus, "--out", dir + "/m", "--steps", "1"], watched: [data, dir + "/m"], naming: ["symbolic link"])
    }

    func testTrainForceRefusesTheFolderHoldingTheCorpus() {
        let outer = BadInput.copy(f.root, to: dir + "/all")
        assertIdxRefuses(["train", "--corpus", outer + "/corpus", "--out", outer, "--force", "--steps", "1"], watched: [outer], naming: ["holds the input"])
    }

    func testTrainModelSizesAboveTheCapsAreRefused() {
        let out = dir + "/m"
        assertIdxRefuses(["train", "--corpus", f.corpus, "--out", out, "--layers", "1000000", "--steps", "1"], watched: [dir], naming: ["n_layers 1000000", "limit"])
    }

    /// A resumed run's new contrastive phase is checked as a new run's is, before any step.
    func testResumedContrastivePhaseWithBadOptionsIsRefused() {
        let out = dir + "/model"
        let trained = runIdx(["train", "--corpus", f.corpus, "--out", out, "--steps", "2", "--d-model", "16", "--heads", "2", "--layers", "1",
                              "--d-ff", "32", "--max-len", "16", "--max-positions", "16"])
        XCTAssertEqual(trained.status, 0, trained.stderr)
        for (flag, value) in [("--temperature", "0"), ("--contrastive-lr", "0"), ("--contrastive-batch", "1")] {
            assertIdxRefuses(["train", "--corpus", f.corpus, "--out", out, "--resume", "--steps", "1000", "--contrastive-steps", "2", flag, value],
                             watched: [out], naming: ["contrastive options", "the learning rate and temperature positive"])
        }
    }

    func testIndexOutOntoAForeignFolderIsRefused() {
        let data = userFolder()
        assertIdxRefuses(["index", "--corpus", f.corpus, "--model", f.model, "--out", data], watched: [data], naming: [data, "notes.txt"])
    }

    func testIndexBatchOfABillionIsRefused() {
        assertIdxRefuses(["index", "--corpus", f.corpus, "--model", f.model, "--out", dir + "/i", "--batch-size", "1000000000"],
                         watched: [dir], naming: ["--batch-size 1000000000", "1 to 4096"])
    }

    func testIndexOutOntoARegularFileIsRefused() {
        let data = userFolder()
        assertIdxRefuses(["index", "--corpus", f.corpus, "--model", f.model, "--out", data + "/notes.txt"], watched: [data], naming: ["notes.txt"])
    }

    func testProjectOutOntoASymlinkIsRefused() throws {
        let data = userFolder()
        try FileManager.default.createSymbolicLink(atPath: dir + "/points.csv", withDestinationPath: data + "/notes.txt")
        assertIdxRefuses(["project", "--index", f.index, "--method", "pca", "--out", dir + "/points.csv"], watched: [data, dir + "/points.csv"],
                         naming: ["points.csv", "symbolic link"])
    }

    func testProjectOutOntoAFIFOIsRefusedWithoutHanging() {
        XCTAssertEqual(mkfifo(dir + "/pipe", 0o644), 0)
        assertIdxRefuses(["project", "--index", f.index, "--method", "pca", "--out", dir + "/pipe"], watched: [dir], naming: ["pipe", "FIFO"])
    }

    func testProjectSvgOntoAFolderIsRefused() {
        let data = userFolder()
        assertIdxRefuses(["project", "--index", f.index, "--method", "pca", "--out", dir + "/p.csv", "--svg", data], watched: [dir], naming: ["data", "folder"])
    }

    func testProjectSampleAboveTheRowsIsRefused() {
        assertIdxRefuses(["project", "--index", f.index, "--method", "pca", "--out", dir + "/p.csv", "--sample", "1000000000"], watched: [dir],
                         naming: ["--sample 1000000000", "at most"])
    }

    func testAtomicWriteRefusesASymlinkAndAFolder() throws {
        IngestTestSupport.write("precious\n", to: dir + "/precious")
        try FileManager.default.createSymbolicLink(atPath: dir + "/out", withDestinationPath: dir + "/precious")
        assertRefused([dir], naming: ["out", "symbolic link"]) { try AtomicFile.write(Data("x".utf8), to: dir + "/out") }
        try FileManager.default.createDirectory(atPath: dir + "/folder", withIntermediateDirectories: false)
        assertRefused([dir], naming: ["folder"]) { try AtomicFile.write(Data("x".utf8), to: dir + "/folder") }
    }

    func testPublishDirectoryRefusesAFileInItsPlace() throws {
        IngestTestSupport.write("precious\n", to: dir + "/target")
        try FileManager.default.createDirectory(atPath: dir + "/.staged", withIntermediateDirectories: false)
        assertRefused([dir + "/target"], naming: ["target", "regular file"]) { try AtomicFile.publishDirectory(dir + "/.staged", at: dir + "/target") }
    }

    // MARK: locks

    func testSymlinkedNightlyLockIsNotFollowed() throws {
        IngestTestSupport.write("victim\n", to: dir + "/victim")
        try FileManager.default.createDirectory(atPath: dir + "/state", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir + "/state/nightly.lock", withDestinationPath: dir + "/victim")
        assertRefused([dir], naming: ["nightly.lock", "symbolic link"]) { _ = try NightlyLock(path: dir + "/state/nightly.lock") }
    }

    func testLockFileThatIsAFIFOIsRefused() {
        XCTAssertEqual(mkfifo(dir + "/x.lock", 0o644), 0)
        assertRefused([dir], naming: ["x.lock", "not a regular file"]) { _ = try ProcessLock(path: dir + "/x.lock") }
    }

    func testSecondIngestWriterIsRefusedNamingTheHolder() throws {
        let out = BadInput.copy(f.corpus, to: dir + "/corpus")
        let lock = try OutputLock.acquire(out, command: "idx ingest")
        defer { lock.release() }
        assertIdxRefuses(["ingest", f.csv, "--out", out], watched: [out], naming: ["pid \(getpid())", "idx ingest writing"])
    }

    func testSecondIndexWriterIsRefusedNamingTheHolder() throws {
        let out = BadInput.copy(f.index, to: dir + "/index")
        let lock = try OutputLock.acquire(out, command: "idx index")
        defer { lock.release() }
        assertIdxRefuses(["index", "--corpus", f.corpus, "--model", f.model, "--out", out], watched: [out], naming: ["pid \(getpid())"])
    }

    func testSecondTrainResumeIsRefusedNamingTheHolder() throws {
        let out = dir + "/model"
        let lock = try OutputLock.acquire(out, command: "idx train")
        defer { lock.release() }
        assertIdxRefuses(["train", "--corpus", f.corpus, "--out", out, "--resume"], watched: [dir], naming: ["pid \(getpid())", "idx train writing"])
    }

    func testOutputLockIsRemovedOnRelease() throws {
        let lock = try OutputLock.acquire(dir + "/corpus", command: "idx ingest")
        XCTAssertEqual(FileKind(lstat: dir + "/.corpus.lock"), .regular)
        XCTAssertThrowsError(try OutputLock.acquire(dir + "/corpus", command: "idx ingest"))
        lock.release()
        XCTAssertEqual(FileKind(lstat: dir + "/.corpus.lock"), .missing)
        try OutputLock.acquire(dir + "/corpus", command: "idx ingest").release()
    }

    func testStaleCheckpointStagingIsRemoved() throws {
        // A staging folder of a killed process (pid 2^22 + 1 does not exist on Linux's default pid_max).
        let stale = dir + "/.model.tmp-4194305-123"
        try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: true)
        let mine = dir + "/.model.tmp-\(getpid())-1"
        try FileManager.default.createDirectory(atPath: mine, withIntermediateDirectories: true)
        AtomicFile.removeStaleStaging(of: dir + "/model")
        XCTAssertEqual(FileKind(lstat: stale), .missing)
        XCTAssertEqual(FileKind(lstat: mine), .directory)
    }

    func testOutputPathAcceptsOnlyEmptyOrOwnFolders() throws {
        try OutputPath.checkFolder(dir + "/absent", kind: .corpus, inputs: [])
        try FileManager.default.createDirectory(atPath: dir + "/empty", withIntermediateDirectories: false)
        try OutputPath.checkFolder(dir + "/empty", kind: .model, inputs: [])
        try OutputPath.checkFolder(f.corpus, kind: .corpus, inputs: [])
        try OutputPath.checkFolder(f.model, kind: .model, inputs: [])
        try OutputPath.checkFolder(f.index, kind: .index, inputs: [])
        // A folder of another kind is not one's own.
        assertRefused([f.corpus], naming: ["not a model folder"]) { try OutputPath.checkFolder(f.corpus, kind: .model, inputs: []) }
        assertRefused([f.index], naming: ["not a corpus folder"]) { try OutputPath.checkFolder(f.index, kind: .corpus, inputs: []) }
        // A manifest of another format is no corpus marker.
        let fake = dir + "/fake"
        try FileManager.default.createDirectory(atPath: fake, withIntermediateDirectories: false)
        IngestTestSupport.write("{\"format\": \"something-else\"}", to: fake + "/manifest.json")
        assertRefused([fake], naming: ["no idx-corpus manifest.json"]) { try OutputPath.checkFolder(fake, kind: .corpus, inputs: []) }
    }
}
