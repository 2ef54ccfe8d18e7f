import Foundation
@testable import IdxServe
import idx
import XCTest
import IdxStore
import IdxProjection
import IdxNightly
import IdxBase

/// Hot reload while `idx index` republishes, attached projections, and a clean SIGTERM.
final class ServeLifecycleTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "idx-serve-life-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try SampleIndex.makeIndex(at: dir + "/index")
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testHotReloadDuringPublishesFailsNoRequest() async throws {
        var configuration = ServeConfiguration(index: dir + "/index")
        configuration.reloadInterval = .milliseconds(20)
        let server = try await RunningServer(configuration)
        let (corpus, model) = try SampleIndex.corpusAndModel()
        final class Tally: @unchecked Sendable {
            let lock = NSLock()
            var ok = 0, failed: [String] = [], generations = Set<String>()
            var running = true
        }
        let tally = Tally()
        // Two clients query in a loop (single and batch) for the whole time of five publishes.
        let clients = (0 ..< 2).map { c in
            Task {
                var i = 0
                while tally.lock.withLock({ tally.running }) {
                    i += 1
                    do {
                        let (status, body) = c == 0
                            ? try await server.request("/search?q=\(urlQuery(["alien robot", "a murder", "love in paris"][i % 3]))&k=5")
                            : try await server.request("/search", method: "POST",
                                                       body: Data("{\"queries\": [\"space\", \"haunted house\"], \"k\": 3}".utf8))
                        let (hs, health) = try await server.json("/healthz")
                        tally.lock.withLock {
                            if status == 200 && hs == 200 && !body.isEmpty { tally.ok += 1 } else {
                                tally.failed.append("HTTP \(status)/\(hs): \(String(decoding: body.prefix(300), as: UTF8.self))")
                            }
                            if let g = (health as? [String: Any])?["generation"] as? String { tally.generations.insert(g) }
                        }
                    } catch {
                        tally.lock.withLock { tally.failed.append("\(error)") }
                    }
                }
            }
        }
        for _ in 0 ..< 5 {
            let r = try IdxBinary.run(["index", "--model", model, "--corpus", corpus, "--out", dir + "/index"])
            XCTAssertEqual(r.status, 0, r.stderr)
            try await Task.sleep(for: .milliseconds(150))
        }
        // The last publish is served within a few checks.
        let deadline = Date().addingTimeInterval(20)
        while server.server.holder.current.generation != "gen-000006" && Date() < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        try await Task.sleep(for: .milliseconds(200))
        tally.lock.withLock { tally.running = false }
        for c in clients { await c.value }
        XCTAssertEqual(server.server.holder.current.generation, "gen-000006")
        tally.lock.withLock {
            XCTAssertEqual(tally.failed, [], "failed requests during publishes")
            XCTAssertGreaterThan(tally.ok, 20, "too few requests to say anything")
            XCTAssertTrue(tally.generations.contains("gen-000001") && tally.generations.contains("gen-000006"), "\(tally.generations)")
        }
        let (_, metrics) = try await server.request("/metrics")
        XCTAssertTrue(String(decoding: metrics, as: UTF8.self).contains("idx_generation 6"))
        try await server.stop()
    }

    func testAttachedProjectionIsServedAndFollowed() async throws {
        var configuration = ServeConfiguration(index: dir + "/index")
        configuration.reloadInterval = .milliseconds(20)
        let server = try await RunningServer(configuration)
        XCTAssertEqual(server.server.holder.current.map.source, .computedAtLoad)

        let r = try IdxBinary.run(["project", "--index", dir + "/index", "--method", "tsne", "--iterations", "300", "--attach"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let reader = try VectorIndexReader(directory: dir + "/index")
        let attached = try XCTUnwrap(try AttachedProjection.read(for: reader))
        XCTAssertEqual(attached.method, .tsne)
        XCTAssertEqual(attached.count, reader.count)

        let deadline = Date().addingTimeInterval(20)
        while server.server.holder.current.map.source != .attached && Date() < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let (_, answer) = try await server.json("/map")
        let map = try XCTUnwrap(answer as? [String: Any])
        XCTAssertEqual(map["method"] as? String, "tsne")
        XCTAssertEqual(map["source"] as? String, "attached")
        // (JSON's decimal text reads back to within a float's precision.)
        let x = try XCTUnwrap(map["x"] as? [Double]), y = try XCTUnwrap(map["y"] as? [Double])
        XCTAssertEqual(x.count, reader.count)
        for i in 0 ..< reader.count {
            XCTAssertEqual(Float(x[i]), attached.coordinates[2 * i], accuracy: 1e-5)
            XCTAssertEqual(Float(y[i]), attached.coordinates[2 * i + 1], accuracy: 1e-5)
        }
        try await server.stop()
    }

    func testAttachedProjectionIsCheckedAgainstItsGeneration() throws {
        let index = dir + "/index"
        let reader = try VectorIndexReader(directory: index)
        let coords = (0 ..< 2 * reader.count).map { Float($0) / 7 }
        try AttachedProjection(method: .pca, coordinates: coords).attach(to: reader)
        XCTAssertEqual(try AttachedProjection.read(for: reader), AttachedProjection(method: .pca, coordinates: coords))

        // Too few points: refused when attaching.
        XCTAssertThrowsError(try AttachedProjection(method: .pca, coordinates: [1, 2]).attach(to: reader)) {
            XCTAssertTrue("\($0)".contains("the projection has 1 points"), "\($0)")
        }
        // A damaged byte: the checksum names the file and the remedy.
        let path = AttachedProjection.path(of: reader)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[40] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try AttachedProjection.read(for: reader)) {
            XCTAssertTrue("\($0)".contains("checksum mismatch") && "\($0)".contains("idx project"), "\($0)")
        }
        // The server falls back to a PCA and says why.
        let served = try ServedGeneration(index: index)
        XCTAssertEqual(served.map.source, .computedAtLoad)
        XCTAssertTrue(served.mapWarning?.contains("checksum mismatch") ?? false)

        // A file copied into another generation is refused (bound to its manifest).
        try AttachedProjection(method: .pca, coordinates: coords).attach(to: reader)
        let (corpus, model) = try SampleIndex.corpusAndModel()
        let again = try idx.IndexCommand.parse(["--model", model, "--corpus", corpus, "--out", index])
        try again.run()
        let next = try VectorIndexReader(directory: index)
        XCTAssertEqual(try AttachedProjection.read(for: next), nil, "a new generation starts without a projection")
        try FileManager.default.copyItem(atPath: path, toPath: AttachedProjection.path(of: next))
        XCTAssertThrowsError(try AttachedProjection.read(for: next)) {
            XCTAssertTrue("\($0)".contains("another manifest"), "\($0)")
        }
    }

    /// `idx serve` on the sample index as a process, once its start-up line names the port.
    /// `fileLimit`: the open-file limit it runs under (`ulimit -n`).
    func startServe(_ extra: [String], fileLimit: Int? = nil) throws -> (process: Process, port: Int, out: Pipe, text: String) {
        let p = Process()
        let arguments = ["serve", "--index", dir + "/index", "--port", "0"] + extra
        if let fileLimit {
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", "ulimit -n \(fileLimit) && exec \"$0\" \"$@\"", try IdxBinary.path] + arguments
        } else {
            p.executableURL = URL(fileURLWithPath: try IdxBinary.path)
            p.arguments = arguments
        }
        let out = Pipe()
        p.standardOutput = out
        p.standardError = Pipe()
        try p.run()
        var text = ""
        let deadline = Date().addingTimeInterval(60)
        while !text.contains("/\n") && Date() < deadline {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        let port = try XCTUnwrap(text.range(of: #"127\.0\.0\.1:(\d+)/"#, options: .regularExpression).flatMap {
            Int(text[$0].dropFirst("127.0.0.1:".count).dropLast())
        }, "no start-up line: \(text)")
        return (p, port, out, text)
    }

    /// Seconds until `p` exits, at most `limit` (then it is killed and nil is returned).
    func secondsToExit(_ p: Process, limit: Double) -> Double? {
        let start = Date()
        while p.isRunning {
            if Date().timeIntervalSince(start) > limit { kill(p.processIdentifier, SIGKILL); p.waitUntilExit(); return nil }
            usleep(20_000)
        }
        return Date().timeIntervalSince(start)
    }

    func testServeStopsCleanlyOnSIGTERM() throws {
        // The binary's own executor set-up: Swift's jobs on the event loop, which searches (--batch-threads 0).
        let (p, port, out, started) = try startServe(["--event-loops", "1"])
        var text = started
        let ok = expectation(description: "healthz and a search")
        Task {
            let (status, _) = try await HTTP.request("http://127.0.0.1:\(port)/healthz")
            XCTAssertEqual(status, 200)
            let (searched, body) = try await HTTP.request("http://127.0.0.1:\(port)/search?q=alien+robot&k=3")
            XCTAssertEqual(searched, 200)
            XCTAssertEqual((try? JSONSerialization.jsonObject(with: body) as? [Any])?.count, 3, String(decoding: body, as: UTF8.self))
            ok.fulfill()
        }
        wait(for: [ok], timeout: 30)
        // --event-loops 1: one NIO event loop thread, whatever the cores.
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(p.processIdentifier)/task")
        let loops = tasks.filter { (try? String(contentsOfFile: "/proc/\(p.processIdentifier)/task/\($0)/comm", encoding: .utf8))?.hasPrefix("NIO-SGLTN") ?? false }
        XCTAssertEqual(loops.count, 1, "event loop threads")
        kill(p.processIdentifier, SIGTERM)
        let seconds = try XCTUnwrap(secondsToExit(p, limit: 30), "still running 30 s after SIGTERM")
        XCTAssertLessThan(seconds, 10)
        XCTAssertEqual(p.terminationReason, .exit)
        XCTAssertEqual(p.terminationStatus, 0)
        text += String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(text.contains("idx serve: stopped"), text)
    }

    /// A client that connects and sends nothing, or stops halfway through its request, must not
    /// hold a socket for ever, nor a graceful shutdown: before --idle-seconds and
    /// --shutdown-seconds, a half-sent POST kept SIGTERM from stopping the server for as long
    /// as the client kept its connection open.
    func testIdleAndHalfSentRequestsNeitherHoldSocketsNorTheShutdown() throws {
        let (p, port, out, _) = try startServe(["--idle-seconds", "2", "--shutdown-seconds", "1"])
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        let idle = try RawConnection(port: port)
        let opened = Date()
        XCTAssertEqual(idle.waitForClose(seconds: 20), true, "an idle connection is closed")
        let idleFor = Date().timeIntervalSince(opened)
        XCTAssertGreaterThan(idleFor, 1.5, "closed by the idle timer, not at once")
        XCTAssertLessThan(idleFor, 15)

        let half = try RawConnection(port: port)
        half.send("POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"queries\": [")
        usleep(200_000)
        kill(p.processIdentifier, SIGTERM)
        let seconds = try XCTUnwrap(secondsToExit(p, limit: 30), "a half-sent request held the shutdown for 30 s")
        XCTAssertLessThan(seconds, 1.9, "stopped by --shutdown-seconds 1, before the idle timer (2 s) closed the connection")
        XCTAssertEqual(p.terminationStatus, 0)
        XCTAssertTrue(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("idx serve: stopped"))
    }
}

extension ServeLifecycleTests {
    /// More connections than the process has file descriptors for: without a bound on the
    /// connections served, every accept then failed with EMFILE and was retried at once, and
    /// one core spun at 100% for as long as the connections stayed open. With the bound (here
    /// the default: the limit of 64 less 128, so 16), the server stops accepting, waits idle,
    /// and answers again once they close.
    func testAFloodOfConnectionsPastTheFileLimitNeitherSpinsNorStopsTheServer() throws {
        let (p, port, _, _) = try startServe(["--idle-seconds", "60"], fileLimit: 64)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        var flood: [RawConnection] = []
        for _ in 0 ..< 80 { flood.append(try RawConnection(port: port)) }
        usleep(500_000)
        func cpuTicks() throws -> Int {
            let fields = try String(contentsOfFile: "/proc/\(p.processIdentifier)/stat", encoding: .utf8).split(separator: " ")
            return Int(fields[13])! + Int(fields[14])!
        }
        let before = try cpuTicks()
        sleep(2)
        let ticks = try cpuTicks() - before
        XCTAssertLessThan(ticks, 60, "the server used \(ticks) of 200 ticks of CPU in 2 s while it waited")
        flood.removeAll()
        let answered = expectation(description: "healthz after the flood")
        Task {
            let (status, _) = try await HTTP.request("http://127.0.0.1:\(port)/healthz")
            XCTAssertEqual(status, 200)
            answered.fulfill()
        }
        wait(for: [answered], timeout: 20)
        kill(p.processIdentifier, SIGTERM)
        XCTAssertNotNil(secondsToExit(p, limit: 30))
    }
}

/// A plain TCP connection to the test server, to send what no HTTP client would.
final class RawConnection {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { close(fd); throw IdxError("cannot connect to 127.0.0.1:\(port): errno \(errno)") }
    }

    deinit { close(fd) }

    func send(_ text: String) {
        _ = text.utf8CString.withUnsafeBufferPointer { Glibc.send(fd, $0.baseAddress, $0.count - 1, 0) }
    }

    /// Whether the server closes the connection within `seconds` (reading and dropping anything it sends).
    func waitForClose(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) > 0 else { continue }
            if recv(fd, &buffer, buffer.count, 0) <= 0 { return true }
        }
        return false
    }
}

/// `idx nightly`'s [map] projection setting, and the projection it attaches.
final class NightlyMapSettingTests: XCTestCase {
    func testMapProjectionSettingIsAnEnumAndComputesTheAttachedMap() throws {
        let dir = NSTemporaryDirectory() + "idx-serve-nightly-map-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "[map]\nprojection = \"tsne\"\n".write(toFile: dir + "/idx.toml", atomically: true, encoding: .utf8)
        XCTAssertEqual(try NightlyConfig.load(dir + "/idx.toml").mapProjection, .tsne)
        XCTAssertNil(NightlyConfig().mapProjection, "no projection by default: nightly runs stay as fast as before")
        try "[map]\nprojection = \"umap\"\n".write(toFile: dir + "/idx.toml", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try NightlyConfig.load(dir + "/idx.toml")) {
            XCTAssertTrue("\($0)".contains("\"none\", \"pca\" or \"tsne\""), "\($0)")
        }

        try SampleIndex.makeIndex(at: dir + "/index")
        let reader = try VectorIndexReader(directory: dir + "/index")
        for method in ProjectionMethod.allCases {
            let p = try AttachedProjection.compute(method, of: reader)
            XCTAssertEqual(p.method, method)
            XCTAssertEqual(p.count, reader.count)
            XCTAssertTrue(p.coordinates.allSatisfy(\.isFinite))
            // Not collapsed: the points spread over the plane.
            let xs = stride(from: 0, to: p.coordinates.count, by: 2).map { p.coordinates[$0] }
            XCTAssertGreaterThan(xs.max()! - xs.min()!, 0)
        }
    }
}
