import Foundation
@testable import IdxServe
import NIOPosix
import XCTest
import IdxBase
import IdxSearch
import IdxStore

/// The JSON API against `idx search --json`, and its refusals.
final class ServeAPITests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "idx-serve-api-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try SampleIndex.makeIndex(at: dir + "/index")
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testSearchAnswersExactlyWhatIdxSearchJsonPrints() async throws {
        let server = try await RunningServer(ServeConfiguration(index: dir + "/index"))
        let cases: [(q: String, args: [String], query: String)] = [
            ("alien robot", [], ""),
            ("a detective investigates a murder in the city", ["-k", "7"], "&k=7"),
            ("love", ["-k", "3", "--genre", "romance"], "&k=3&genre=romance"),
            ("robots + aliens & spaceships", ["-k", "20"], "&k=20"),
            ("alien robot", ["--lexical-weight", "0", "--feedback-docs", "0"], "&lexical_weight=0&feedback_docs=0"),
            ("a haunted house", ["--lexical-weight", "0.9", "--feedback-docs", "3", "-k", "4"], "&lexical_weight=0.9&feedback_docs=3&k=4"),
            ("a haunted house", ["--genre-vote", "0", "-k", "4"], "&genre_vote=0&k=4"),
            ("a haunted house", ["--genre-vote", "2.5"], "&genre_vote=2.5"),
        ]
        var expected: [String: String] = [:]
        for c in cases {
            let cli = try IdxBinary.run(["search", "--index", dir + "/index", "--json"] + c.args + [c.q])
            XCTAssertEqual(cli.status, 0, cli.stderr)
            let lines = cli.stdout.split(separator: "\n").map(String.init)
            XCTAssertFalse(lines.isEmpty, "idx search --json printed nothing for \(c.q)")
            let path = "/search?q=\(urlQuery(c.q))\(c.query)"
            expected[path] = "[" + lines.joined(separator: ",") + "]"
            let (status, body) = try await server.request(path)
            XCTAssertEqual(status, 200)
            // The same objects, serialized the same way: byte for byte.
            XCTAssertEqual(String(decoding: body, as: UTF8.self), expected[path], "query \(c.q)")
        }
        // Concurrent requests are searched in batches (QueryBatcher): each still answers as alone.
        let paths = Array(expected.keys)
        try await withThrowingTaskGroup(of: (String, Int, String).self) { group in
            for _ in 0 ..< 6 {
                for path in paths.shuffled() {
                    group.addTask {
                        let (status, body) = try await server.request(path)
                        return (path, status, String(decoding: body, as: UTF8.self))
                    }
                }
            }
            for try await (path, status, body) in group {
                XCTAssertEqual(status, 200)
                XCTAssertEqual(body, expected[path], "concurrent \(path)")
            }
        }

        // The batch route answers each query as the single one does.
        let batch = try JSONSerialization.data(withJSONObject: ["queries": ["alien robot", "love", "!!!"], "k": 4])
        let (status, answer) = try await server.json("/search", method: "POST", body: batch)
        XCTAssertEqual(status, 200)
        let results = try XCTUnwrap((answer as? [String: Any])?["results"] as? [[String: Any]])
        XCTAssertEqual(results.count, 3)
        for (i, q) in ["alien robot", "love"].enumerated() {
            let cli = try IdxBinary.run(["search", "--index", dir + "/index", "--json", "-k", "4", q])
            let expected = try cli.stdout.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! NSDictionary }
            XCTAssertEqual(results[i]["query"] as? String, q)
            XCTAssertEqual((results[i]["hits"] as? [NSDictionary]) ?? [], expected)
        }
        // A query that cleans to nothing is an error of its own; the others are still answered.
        XCTAssertNil(results[2]["hits"])
        XCTAssertTrue((results[2]["error"] as? String ?? "").hasPrefix("query \"!!!\": "), "\(results[2])")
        try await server.stop()
    }

    /// The queries an event loop reads in one turn are searched as one batch, on that loop, each
    /// answering as it does alone; with threads of their own, each answers as alone too.
    func testQueriesReadTogetherAreOneBatchOnTheirEventLoop() throws {
        let engine = try SearchEngine(index: dir + "/index")
        let settings = { var s = SearchSettings(); s.threads = 1; return s }()
        let texts = ["alien robot", "love", "a haunted house", "a detective investigates a murder in the city", "!!!"]
        let alone = texts.map { t in Result { try engine.search(t, settings) }.mapError { $0 as! IdxError } }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let loop = group.next()
        for workers in [QueryBatcher.Workers.eventLoops, .threads(2)] {
            let batcher = QueryBatcher(workers: workers)
            final class Answers: @unchecked Sendable {  // written under `lock`
                let lock = NSLock()
                var results: [Int: Result<[SearchHit], IdxError>] = [:], onTheLoop = 0
            }
            let answers = Answers()
            let done = expectation(description: "answers")
            done.expectedFulfillmentCount = texts.count
            loop.execute {
                for (i, t) in texts.enumerated() {
                    batcher.enqueue(SearchQuery(t), settings, engine: engine, loop: loop) { result in
                        let onLoop = loop.inEventLoop
                        answers.lock.withLock { answers.results[i] = result; answers.onTheLoop += onLoop ? 1 : 0 }
                        done.fulfill()
                    }
                }
            }
            wait(for: [done], timeout: 60)
            for i in texts.indices {
                switch (answers.results[i], alone[i]) {
                case (.success(let got)?, .success(let expected)): XCTAssertEqual(got, expected, "\(workers) \(texts[i])")
                case (.failure(let got)?, .failure(let expected)): XCTAssertEqual(got.message, expected.message)
                default: XCTFail("\(workers) \(texts[i]): \(String(describing: answers.results[i])) against \(alone[i])")
                }
            }
            if workers == .eventLoops {
                XCTAssertEqual(batcher.batches, 1, "one batch for what the loop read in one turn")
                XCTAssertEqual(answers.onTheLoop, texts.count)
            } else {
                XCTAssertEqual(answers.onTheLoop, 0, "answered on the search threads")
            }
            XCTAssertEqual(batcher.batchedQueries, texts.count)
        }
    }

    /// A query is searched and answered on its connection's loop, whichever thread its handler
    /// runs on: here every handler runs on loop 1 (as when they all started on the loop that
    /// accepted), and the connections are on loops 0 and 1. Each loop searches its own
    /// connections' queries as one batch; the answers are the ones each query gets alone.
    func testAQueryIsSearchedOnItsConnectionsLoop() throws {
        let engine = try SearchEngine(index: dir + "/index")
        let settings = { var s = SearchSettings(); s.threads = 1; return s }()
        let texts = ["alien robot", "love", "a haunted house", "a detective investigates a murder in the city"]
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        defer { try? group.syncShutdownGracefully() }
        let loops = Array(group.makeIterator())
        let batcher = QueryBatcher()
        final class Answers: @unchecked Sendable {  // written under `lock`
            let lock = NSLock()
            var results: [Int: [SearchHit]] = [:], onTheirLoop = 0
        }
        let answers = Answers()
        let done = expectation(description: "answers")
        done.expectedFulfillmentCount = texts.count
        // Loop 0 waits until every query is queued, so that it reads both of its own in one turn.
        let queued = DispatchSemaphore(value: 0)
        loops[0].execute { queued.wait() }
        loops[1].execute {
            defer { queued.signal() }
            for (i, t) in texts.enumerated() {
                let connectionLoop = loops[i % 2]
                batcher.enqueue(SearchQuery(t), settings, engine: engine, loop: connectionLoop) { result in
                    let onTheirLoop = connectionLoop.inEventLoop
                    answers.lock.withLock { answers.results[i] = try? result.get(); answers.onTheirLoop += onTheirLoop ? 1 : 0 }
                    done.fulfill()
                }
            }
        }
        wait(for: [done], timeout: 60)
        for (i, t) in texts.enumerated() { XCTAssertEqual(answers.results[i], try engine.search(t, settings), t) }
        XCTAssertEqual(answers.onTheirLoop, texts.count, "every answer on its connection's loop")
        XCTAssertEqual(batcher.batches, 2, "one batch a loop")
        XCTAssertEqual(batcher.batchedQueries, texts.count)
    }

    /// Every route first moves its handler to the connection's loop: called off that loop,
    /// ConnectionLoop.enter returns only once the loop has taken a turn for it (here, only after
    /// the loop, held busy, is let go), so that the loop resumes the handler.
    func testAHandlerMovesToItsConnectionsLoopBeforeTheRoute() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let held = DispatchSemaphore(value: 0), holding = DispatchSemaphore(value: 0)
        loop.execute { holding.signal(); held.wait() }
        holding.wait()
        final class Entered: @unchecked Sendable {  // written under `lock`
            let lock = NSLock()
            var entered = false
        }
        let state = Entered()
        let task = Task {
            await ConnectionLoop.enter(loop)
            state.lock.withLock { state.entered = true }
        }
        try await Task.sleep(for: .milliseconds(200))
        XCTAssertFalse(state.lock.withLock { state.entered }, "the route ran before its connection's loop took a turn")
        held.signal()
        await task.value
        XCTAssertTrue(state.lock.withLock { state.entered })
        try await group.shutdownGracefully()
    }

    /// A search that starts while no other runs scans on every core (threads 0), one that starts
    /// beside another on one; a fixed count is used as it is. The answer is the same either way
    /// (SearchTests.testAnswersDoNotDependOnTheScanThreads).
    func testASearchAloneScansOnEveryCore() {
        let adaptive = QueryBatcher(scanThreads: .adaptive)
        let (first, second) = adaptive.scanning { outer in (outer, adaptive.scanning { $0 }) }
        XCTAssertEqual(first, 0, "alone: every core")
        XCTAssertEqual(second, 1, "beside another search: one thread")
        XCTAssertEqual(adaptive.scanning { $0 }, 0, "alone again once the others ended")
        let fixed = QueryBatcher(scanThreads: .fixed(3))
        XCTAssertEqual(fixed.scanning { outer in [outer, fixed.scanning { $0 }] }, [3, 3])
    }

    func testDocumentsNeighboursMapHealthAndMetrics() async throws {
        let server = try await RunningServer(ServeConfiguration(index: dir + "/index"))
        let reader = try VectorIndexReader(directory: dir + "/index")

        let (s1, doc) = try await server.json("/documents/38")
        XCTAssertEqual(s1, 200)
        let d = try XCTUnwrap(doc as? [String: Any])
        let m = try reader.documentMetadata(try XCTUnwrap((0 ..< reader.count).first { try reader.documentId($0) == 38 }))
        XCTAssertEqual(d["title"] as? String, m.title)
        XCTAssertEqual(d["description"] as? String, m.description)
        XCTAssertEqual(d["id"] as? Int, 38)

        // More like this: k others, never the document itself, best first.
        let (s2, nb) = try await server.json("/neighbours/38?k=5")
        XCTAssertEqual(s2, 200)
        let hits = try XCTUnwrap((nb as? [String: Any])?["neighbours"] as? [[String: Any]])
        XCTAssertEqual(hits.count, 5)
        XCTAssertFalse(hits.contains { $0["id"] as? Int == 38 })
        let scores = hits.compactMap { $0["score"] as? Double }
        XCTAssertEqual(scores, scores.sorted(by: >))

        // The map: one point per document, a PCA computed at load when none is attached.
        let (s3, mapAnswer) = try await server.json("/map")
        XCTAssertEqual(s3, 200)
        let map = try XCTUnwrap(mapAnswer as? [String: Any])
        XCTAssertEqual(map["count"] as? Int, reader.count)
        XCTAssertEqual((map["x"] as? [Double])?.count, reader.count)
        XCTAssertEqual(map["method"] as? String, "pca")
        XCTAssertEqual(map["source"] as? String, "computed at load")
        let (s4, binary) = try await server.request("/map.bin")
        XCTAssertEqual(s4, 200)
        let headerLength = Int(binary.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
        let start = (4 + headerLength + 7) / 8 * 8
        XCTAssertEqual(binary.count, start + reader.count * (4 + 4 + 8 + 2))

        let (s5, health) = try await server.json("/healthz")
        XCTAssertEqual(s5, 200)
        let h = try XCTUnwrap(health as? [String: Any])
        XCTAssertEqual(h["generation"] as? String, "gen-000001")
        XCTAssertEqual(h["modelHash"] as? String, reader.manifest.modelHash)
        XCTAssertEqual(h["documents"] as? Int, reader.count)

        _ = try await server.request("/search?q=alien&k=0")
        let (s6, metrics) = try await server.request("/metrics")
        XCTAssertEqual(s6, 200)
        let text = String(decoding: metrics, as: UTF8.self)
        XCTAssertTrue(text.contains("idx_http_requests_total{method=\"GET\",route=\"/documents/{id}\",status=\"200\"} 1"), text)
        XCTAssertTrue(text.contains("idx_http_errors_total{method=\"GET\",route=\"/search\",status=\"400\"} 1"), text)
        XCTAssertTrue(text.contains("idx_http_request_duration_seconds_bucket{method=\"GET\",route=\"/neighbours/{id}\""), text)
        XCTAssertTrue(text.contains("idx_generation 1"), text)
        try await server.stop()
    }

    func testBadRequestsGet4xxNamingTheField() async throws {
        var configuration = ServeConfiguration(index: dir + "/index")
        configuration.limits.maxBodyBytes = 1000
        configuration.limits.maxBatch = 3
        let server = try await RunningServer(configuration)
        func expect(_ path: String, method: String = "GET", body: Data? = nil, status: Int, field: String?, saying words: String,
                    line: UInt = #line) async throws {
            let (s, answer) = try await server.json(path, method: method, body: body)
            XCTAssertEqual(s, status, "\(path): \(answer)", line: line)
            let error = (answer as? [String: Any])?["error"] as? [String: Any]
            XCTAssertEqual(error?["field"] as? String, field, "\(path): \(answer)", line: line)
            XCTAssertEqual(error?["status"] as? Int, status, line: line)
            let message = error?["message"] as? String ?? ""
            XCTAssertTrue(message.contains(words), "\(path): \(message)", line: line)
        }
        try await expect("/search", status: 400, field: "q", saying: "give the text")
        try await expect("/search?q=alien&k=0", status: 400, field: "k", saying: "from 1 to 100")
        try await expect("/search?q=alien&k=101", status: 400, field: "k", saying: "from 1 to 100")
        try await expect("/search?q=alien&k=ten", status: 400, field: "k", saying: "whole number")
        try await expect("/search?q=alien&genre=Westerns", status: 400, field: "genre", saying: "Sci-Fi")
        try await expect("/search?q=" + String(repeating: "a", count: 1001), status: 400, field: "q", saying: "at most 1000")
        try await expect("/search?q=%21%21%21", status: 400, field: "q", saying: "query \"!!!\": ")
        try await expect("/search?q=alien&lexical_weight=1.5", status: 400, field: "lexical_weight", saying: "from 0 (cosine only)")
        try await expect("/search?q=alien&feedback_docs=-1", status: 400, field: "feedback_docs", saying: "give 0 (one pass)")
        try await expect("/search?q=alien&genre_vote=-1", status: 400, field: "genre_vote", saying: "give a weight of 0")
        try await expect("/documents/999999", status: 404, field: "id", saying: "no document with id 999999")
        try await expect("/documents/abc", status: 400, field: "id", saying: "not a whole number")
        try await expect("/neighbours/38?k=1000", status: 400, field: "k", saying: "from 1 to 100")
        try await expect("/nowhere", status: 404, field: nil, saying: "no route GET /nowhere")
        let big = try JSONSerialization.data(withJSONObject: ["queries": [String(repeating: "robot ", count: 300)]])
        try await expect("/search", method: "POST", body: big, status: 413, field: "body", saying: "larger than 1000 bytes")
        try await expect("/search", method: "POST", body: Data("{\"queries\": [".utf8), status: 400, field: "body", saying: "not a JSON object")
        try await expect("/search", method: "POST", body: Data("[\"alien\"]".utf8), status: 400, field: "body", saying: "not a JSON object")
        try await expect("/search", method: "POST", body: Data("{\"queries\": []}".utf8), status: 400, field: "queries", saying: "non-empty")
        try await expect("/search", method: "POST", body: Data("{\"queries\": [\"a\",\"b\",\"c\",\"d\"]}".utf8), status: 400,
                         field: "queries", saying: "at most 3")
        try await expect("/search", method: "POST", body: Data("{\"queries\": [\"alien\", 7]}".utf8), status: 400,
                         field: "queries[1]", saying: "not a string")
        try await expect("/search", method: "POST", body: Data("{\"queries\": [\"alien\"], \"k\": \"5\"}".utf8), status: 400,
                         field: "k", saying: "wrong type")
        try await expect("/search", method: "POST", body: Data("{\"queries\": [\"alien\"], \"k\": 500}".utf8), status: 400,
                         field: "k", saying: "from 1 to 100")
        // The server is still fine after all that.
        let (s, _) = try await server.request("/search?q=alien")
        XCTAssertEqual(s, 200)
        try await server.stop()
    }

    func testTokenProtectsTheAPIButNotThePageOrHealth() async throws {
        var configuration = ServeConfiguration(index: dir + "/index")
        configuration.token = "s3cret-token"
        let server = try await RunningServer(configuration)
        let (noToken, answer) = try await server.json("/search?q=alien")
        XCTAssertEqual(noToken, 401)
        XCTAssertEqual(((answer as? [String: Any])?["error"] as? [String: Any])?["field"] as? String, "Authorization")
        let (wrong, _) = try await server.request("/search?q=alien", headers: ["Authorization": "Bearer s3cret-tokeN"])
        XCTAssertEqual(wrong, 401)
        let (right, _) = try await server.request("/search?q=alien", headers: ["Authorization": "Bearer s3cret-token"])
        XCTAssertEqual(right, 200)
        let (metrics, _) = try await server.request("/metrics")
        XCTAssertEqual(metrics, 401)
        for open in ["/", "/app.js", "/map.js", "/api.js", "/style.css", "/healthz"] {
            let (s, body) = try await server.request(open)
            XCTAssertEqual(s, 200, open)
            XCTAssertFalse(body.isEmpty, open)
        }
        // A path that looks like a file the page could name is not served from disk.
        for probe in ["/../Package.swift", "/app.js/../../Package.swift", "/%2e%2e/Package.swift", "/index.html"] {
            let (s, _) = try await server.request(probe)
            XCTAssertTrue(s == 404 || s == 401, "\(probe): \(s)")
        }
        try await server.stop()
    }

    func testAPortInUseIsRefusedWithAMessage() async throws {
        let first = try await RunningServer(ServeConfiguration(index: dir + "/index"))
        var configuration = ServeConfiguration(index: dir + "/index")
        configuration.port = first.port
        let second = try IdxServer(configuration: configuration)
        do {
            try await second.run()
            XCTFail("a second server on port \(first.port) started")
        } catch let e as IdxError {
            XCTAssertTrue(e.message.contains("the port is in use; pick another --port"), e.message)
        }
        let (status, _) = try await first.request("/healthz")
        XCTAssertEqual(status, 200, "the first server is unharmed")
        try await first.stop()
    }

    func testTokenFileIsReadAndAnEmptyOneRefused() throws {
        let path = dir + "/token"
        try "  abc123\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertEqual(try ServeConfiguration.readToken(file: path), "abc123")
        try "\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ServeConfiguration.readToken(file: path)) { XCTAssertTrue("\($0)".contains("holds no token")) }
        XCTAssertThrowsError(try ServeConfiguration.readToken(file: dir + "/missing")) { XCTAssertTrue("\($0)".contains("cannot read")) }
    }

    func testFormQueryDecodesPlusAndPercent() {
        let q = FormQuery.parse("q=alien+robot&k=5&genre=Sci-Fi&x=%2B1%26&q=second&flag")
        XCTAssertEqual(q["q"], "alien robot")
        XCTAssertEqual(q["k"], "5")
        XCTAssertEqual(q["x"], "+1&")
        XCTAssertEqual(q["flag"], "")
        // As Foundation's removingPercentEncoding after '+' → ' ': a malformed escape or bytes
        // that are not UTF-8 leave the component as it came.
        for raw in ["a%2", "%zz+b", "caf%C3%A9", "%E2%82%AC+%26", "%ff", "%", "100%25", "%c3", "a+b%20c"] {
            let spaced = raw.replacingOccurrences(of: "+", with: " ")
            XCTAssertEqual(FormQuery.parse("q=" + raw)["q"], spaced.removingPercentEncoding ?? spaced, raw)
        }
    }
}
