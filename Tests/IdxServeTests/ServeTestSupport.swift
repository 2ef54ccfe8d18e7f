import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import IdxServe
import Logging
import ServiceLifecycle
import XCTest
import idx
import IdxBase
import IdxCorpus
import IdxModel
import IdxTrain

/// A small index of the bundled sample (405 invented films) with an untrained tiny model:
/// the server's plumbing is under test, not the model's quality. Built once per test run.
enum SampleIndex {
    static var root: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var built: (corpus: String, model: String)?

    private static var folder: String { NSTemporaryDirectory() + "idx-serve-tests-\(getpid())" }

    /// A corpus and a model in a folder that lives for the whole test run (removed at exit).
    static func corpusAndModel() throws -> (corpus: String, model: String) {
        try lock.withLock {
            if let built { return built }
            let dir = folder
            try? FileManager.default.removeItem(atPath: dir)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            atexit { try? FileManager.default.removeItem(atPath: SampleIndex.folder) }
            let corpus = dir + "/corpus"
            var options = Ingest.Options(inputs: [root + "/corpora/sample/movies.csv"], output: corpus, vocabSize: 2000)
            options.showProgress = false
            _ = try Ingest.run(options)
            let reader = try CorpusReader(directory: corpus)
            let config = ModelConfig(vocabSize: try reader.tokenizer().vocabSize, dModel: 32, nHeads: 2, nLayers: 1, dFF: 64,
                                     maxLen: 32, dropout: 0.1)
            var train = TrainOptions()
            train.steps = 0
            let trainer = try Trainer(config: config, options: train, corpus: try reader.readTokens(), tokenizerHash: reader.tokenizerHash)
            let model = dir + "/model"
            try trainer.writeCheckpoint(directory: model, tokenizerJSON: try Data(contentsOf: URL(fileURLWithPath: corpus + "/tokenizer.json")),
                                        corpusPath: corpus, log: "", elapsed: 0)
            built = (corpus, model)
            return (corpus, model)
        }
    }

    /// A fresh index of the sample at `path` (one generation).
    static func makeIndex(at path: String) throws {
        let (corpus, model) = try corpusAndModel()
        let index = try IndexCommand.parse(["--model", model, "--corpus", corpus, "--out", path])
        try index.run()
    }
}

/// The idx executable built beside the tests (for `idx search --json`, `idx index` and `idx serve`).
enum IdxBinary {
    static var path: String {
        get throws {
            var candidates = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path + "/idx"]
            for b in Bundle.allBundles { candidates.append(b.bundleURL.deletingLastPathComponent().path + "/idx") }
            candidates += [SampleIndex.root + "/.build/release/idx", SampleIndex.root + "/.build/debug/idx"]
            let fm = FileManager.default
            guard let found = candidates.filter({ fm.isExecutableFile(atPath: $0) }).max(by: {
                let a = (try? fm.attributesOfItem(atPath: $0)[.modificationDate] as? Date) ?? .distantPast
                let b = (try? fm.attributesOfItem(atPath: $1)[.modificationDate] as? Date) ?? .distantPast
                return a < b
            }) else { throw XCTSkip("the idx executable was not found next to the tests (\(candidates))") }
            return found
        }
    }

    /// Runs idx to the end: (status, stdout, stderr).
    static func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try path)
        p.arguments = arguments
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        final class Box: @unchecked Sendable { var data = Data() }
        let errBox = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: errBox.data, as: UTF8.self))
    }
}

/// An IdxServer running in the test process on a free loopback port.
final class RunningServer: @unchecked Sendable {
    let server: IdxServer
    let port: Int
    private let group: ServiceGroup
    private let task: Task<Void, Error>

    init(_ configuration: ServeConfiguration) async throws {
        var configuration = configuration
        configuration.port = 0
        var logger = Logger(label: "idx.serve.test")
        logger.logLevel = .warning
        server = try IdxServer(configuration: configuration, logger: logger)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let app = server.application { port in continuation.yield(port) }
        group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let group = self.group
        task = Task { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw IdxError("the test server did not start") }
        self.port = port
    }

    func stop() async throws {
        await group.triggerGracefulShutdown()
        try await task.value
    }

    var base: String { "http://127.0.0.1:\(port)" }

    /// One request: (status, body).
    func request(_ path: String, method: String = "GET", body: Data? = nil, headers: [String: String] = [:]) async throws -> (Int, Data) {
        try await HTTP.request(base + path, method: method, body: body, headers: headers)
    }

    func json(_ path: String, method: String = "GET", body: Data? = nil, headers: [String: String] = [:]) async throws -> (Int, Any) {
        let (status, data) = try await request(path, method: method, body: body, headers: headers)
        return (status, try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]))
    }
}

enum HTTP {
    static let session: URLSession = {
        let c = URLSessionConfiguration.ephemeral
        c.timeoutIntervalForRequest = 30
        c.connectionProxyDictionary = [:] // loopback only: never through an HTTP_PROXY of the environment
        return URLSession(configuration: c)
    }()

    static func request(_ url: String, method: String = "GET", body: Data? = nil, headers: [String: String] = [:]) async throws -> (Int, Data) {
        var r = URLRequest(url: URL(string: url)!)
        r.httpMethod = method
        r.httpBody = body
        for (k, v) in headers { r.setValue(v, forHTTPHeaderField: k) }
        let (data, response) = try await session.data(for: r)
        return ((response as! HTTPURLResponse).statusCode, data)
    }
}

/// `q` for a URL query (spaces as %20, '+' and '&' escaped).
func urlQuery(_ s: String) -> String {
    var allowed = CharacterSet.urlQueryAllowed
    allowed.remove(charactersIn: "+&=?")
    return s.addingPercentEncoding(withAllowedCharacters: allowed)!
}
