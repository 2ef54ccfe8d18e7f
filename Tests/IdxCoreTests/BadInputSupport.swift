import Foundation
import XCTest
import IdxBase
import IdxCorpus
import IdxModel
import IdxStore

/// What the bad-input tests share: a tiny corpus, model and index built once, fingerprints
/// of folders (to prove a refused command changed nothing), and runners that assert a refusal
/// (an error naming the culprit, no raw control byte, nothing changed, no hang).
enum BadInput {
    /// A corpus (60 invented films), a model over its tokenizer (zero weights, tiny config),
    /// and an index of 8-dimensional vectors with standardisation and a lexical half, under one
    /// temporary folder made once per test process.
    struct Fixture {
        let root: String
        var corpus: String { root + "/corpus" }
        var model: String { root + "/model" }
        var index: String { root + "/index" }
        var csv: String { root + "/movies.csv" }
    }

    nonisolated(unsafe) static let fixture: Fixture = {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("idx-badinput-fixture-\(getpid())").path
        try? FileManager.default.removeItem(atPath: root)
        try! FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let f = Fixture(root: root)
        IngestTestSupport.write(IngestTestSupport.movies(60), to: f.csv)
        var o = Ingest.Options(inputs: [f.csv], output: f.corpus, vocabSize: 200)
        o.showProgress = false
        try! Ingest.run(o)
        let reader = try! CorpusReader(directory: f.corpus)
        let tok = try! reader.tokenizer()
        let cfg = ModelConfig(vocabSize: tok.vocabSize, dModel: 8, nHeads: 2, nLayers: 1, dFF: 16, maxLen: 16)
        let layout = ParameterLayout(cfg)
        var weights = [Float](repeating: 0, count: layout.count)
        for i in weights.indices { weights[i] = Float((i * 7919) % 13) / 100 - 0.06 }
        var st = weights.withUnsafeBufferPointer { ModelCheckpoint.tensors(of: $0.baseAddress!, layout: layout) }
        st.metadata = ModelCheckpoint.metadata(cfg, tokenizerHash: tok.hash, step: 1, trainedTokens: 16, titlesInText: false)
        try! FileManager.default.createDirectory(atPath: f.model, withIntermediateDirectories: true)
        try! st.serialized().write(to: URL(fileURLWithPath: f.model + "/model.safetensors"))
        try! Data(tok.json).write(to: URL(fileURLWithPath: f.model + "/tokenizer.json"))
        let meta = try! reader.readMetadata()
        let d = 8
        let vectors = (0 ..< meta.count * d).map { Float(($0 * 31) % 17) - 8 }
        _ = try! VectorIndexWriter.write(directory: f.index, embeddings: vectors, dimension: d, metadata: meta,
                                         provenance: IndexProvenance(modelHash: "m", tokenizerHash: "t", modelDirectory: "", maxTokens: 16, source: "test"),
                                         append: false, standardize: true)
        atexit { try? FileManager.default.removeItem(atPath: FileManager.default.temporaryDirectory.appendingPathComponent("idx-badinput-fixture-\(getpid())").path) }
        return f
    }()

    /// Every entry under `root` (or `root` itself when it is no folder): path, kind, size, a
    /// hash of the bytes of regular files, the target of links. Equal fingerprints: nothing
    /// was created, removed, replaced or changed.
    static func fingerprint(_ root: String) -> String {
        var lines: [String] = []
        func visit(_ path: String, _ shown: String) {
            let kind = FileKind(lstat: path)
            switch kind {
            case .regular:
                let hash = (try? XXHash64.hashFile(at: path)).map { XXHash64.hex($0.hash) } ?? "unreadable"
                lines.append("\(shown) file \(hash)")
            case .symbolicLink:
                lines.append("\(shown) link \((try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? "?")")
            case .directory:
                lines.append("\(shown) dir")
                for name in ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() {
                    visit(path + "/" + name, shown + "/" + name)
                }
            default:
                lines.append("\(shown) \(kind.name)")
            }
        }
        visit(root, ".")
        return lines.joined(separator: "\n")
    }

    /// A copy of a fixture folder in `dir`, to damage.
    static func copy(_ from: String, to: String) -> String {
        try? FileManager.default.removeItem(atPath: to)
        try! FileManager.default.copyItem(atPath: from, toPath: to)
        return to
    }

    /// No raw control byte (other than the newline ending a line) in what reaches the terminal.
    static func hasRawControlBytes(_ s: String) -> Bool {
        s.utf8.contains { ($0 < 0x20 && $0 != 0x0A) || $0 == 0x7F }
    }
}

extension XCTestCase {
    /// Asserts that `body` throws an IdxError naming every `culprit`, with control bytes
    /// escaped, and that every `watched` path is byte-identical before and after.
    func assertRefused(_ watched: [String], naming culprits: [String], file: StaticString = #filePath, line: UInt = #line,
                       _ body: () throws -> Void) {
        let before = watched.map(BadInput.fingerprint)
        do {
            try body()
            XCTFail("accepted; expected an error naming \(culprits)", file: file, line: line)
        } catch let e as IdxError {
            for c in culprits { XCTAssertTrue(e.message.contains(c), "message lacks \"\(c)\": \(e.message)", file: file, line: line) }
            XCTAssertFalse(BadInput.hasRawControlBytes(e.message), "raw control bytes in: \(e.message)", file: file, line: line)
            XCTAssertLessThan(e.message.utf8.count, 2000, "message too long", file: file, line: line)
        } catch {
            XCTFail("not an IdxError: \(error)", file: file, line: line)
        }
        XCTAssertEqual(watched.map(BadInput.fingerprint), before, "a refused call changed a watched path", file: file, line: line)
    }

    /// Runs the idx binary; nil status when it ran past `timeout` seconds (then it is killed).
    func runIdx(_ args: [String], cwd: String? = nil, timeout: Double = 120) -> (status: Int32?, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: NightlyJobTests.idxBinary)
        p.arguments = args
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let err = FileManager.default.temporaryDirectory.appendingPathComponent("idx-badinput-err-\(getpid())-\(UInt32.random(in: 0 ... .max))").path
        FileManager.default.createFile(atPath: err, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: err) }
        p.standardError = FileHandle(forWritingAtPath: err)
        p.standardOutput = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { return (-1, "cannot start idx: \(error)") }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning { p.terminate(); usleep(200_000); kill(p.processIdentifier, SIGKILL); p.waitUntilExit(); return (nil, "") }
        return (p.terminationStatus, (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
    }

    /// Asserts that `idx args` exits non-zero in time, its stderr names every `culprit`
    /// without raw control bytes, and every `watched` path is byte-identical before and after.
    func assertIdxRefuses(_ args: [String], cwd: String? = nil, watched: [String], naming culprits: [String],
                          file: StaticString = #filePath, line: UInt = #line) {
        let before = watched.map(BadInput.fingerprint)
        let (status, stderr) = runIdx(args, cwd: cwd)
        XCTAssertNotNil(status, "idx \(args.joined(separator: " ")) hung", file: file, line: line)
        XCTAssertNotEqual(status, 0, "idx \(args.joined(separator: " ")) exited 0", file: file, line: line)
        for c in culprits { XCTAssertTrue(stderr.contains(c), "stderr lacks \"\(c)\": \(stderr)", file: file, line: line) }
        XCTAssertFalse(BadInput.hasRawControlBytes(stderr), "raw control bytes in: \(stderr)", file: file, line: line)
        XCTAssertEqual(watched.map(BadInput.fingerprint), before, "a refused command changed a watched path", file: file, line: line)
    }
}
