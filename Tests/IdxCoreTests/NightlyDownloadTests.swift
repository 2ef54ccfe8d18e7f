import Foundation
import XCTest
import IdxBase
#if canImport(Glibc)
import Glibc
@testable import IdxNightly
#endif

/// A tiny HTTP/1.1 file server on 127.0.0.1 for the tests: serves one body at
/// every path, honours `Range: bytes=N-`, and can cut a response short after a
/// given number of body bytes (to test resume) or announce a wrong total.
final class RangeHTTPServer: @unchecked Sendable {
    private let lock = NSLock()
    private var _body: [UInt8]
    private var _cuts: [Int] = []           // body-byte limits for the next responses
    private var _announcedTotal: Int?       // total to claim in Content-Range instead of the real one
    private var _omitLength = false         // a 200 without Content-Length (a body of unknown size)
    private var _ranges: [String] = []      // Range header of each request ("" when none)
    private let fd: Int32
    let port: UInt16

    init(body: [UInt8]) throws {
        _body = body
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0, listen(fd, 16) == 0 else { throw IdxError("test server: cannot listen") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        self.fd = fd
        port = UInt16(bigEndian: addr.sin_port)
        let t = Thread { [self] in acceptLoop() }
        t.start()
    }

    var url: URL { URL(string: "http://127.0.0.1:\(port)/data/movies.csv")! }
    func setCuts(_ c: [Int]) { lock.lock(); _cuts = c; lock.unlock() }
    func setBody(_ b: [UInt8]) { lock.lock(); _body = b; lock.unlock() }
    func setAnnouncedTotal(_ t: Int?) { lock.lock(); _announcedTotal = t; lock.unlock() }
    func setOmitLength(_ o: Bool) { lock.lock(); _omitLength = o; lock.unlock() }
    var ranges: [String] { lock.lock(); defer { lock.unlock() }; return _ranges }

    func stop() { shutdown(fd, Int32(SHUT_RDWR)); close(fd) }

    private func acceptLoop() {
        while true {
            let c = accept(fd, nil, nil)
            if c < 0 { return }
            handle(c)
            close(c)
        }
    }

    private func handle(_ c: Int32) {
        var request = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        while !request.suffix(4).elementsEqual(Array("\r\n\r\n".utf8)) {
            let n = read(c, &buf, buf.count)
            if n <= 0 { return }
            request += buf[0 ..< n]
        }
        let text = String(decoding: request, as: UTF8.self)
        var range = ""
        for line in text.split(separator: "\r\n") where line.lowercased().hasPrefix("range:") {
            range = line.dropFirst(6).trimmingCharacters(in: .whitespaces)
        }
        if text.hasPrefix("GET /old/") {
            // A moved file: the redirect's own body must not reach the download.
            let moved = "HTTP/1.1 301 Moved Permanently\r\nLocation: /data/movies.csv\r\nContent-Length: 5\r\n"
                + "Connection: close\r\n\r\nmoved"
            lock.lock(); _ranges.append(range); lock.unlock()
            _ = Array(moved.utf8).withUnsafeBytes { send(c, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
            shutdown(c, Int32(SHUT_RDWR))
            return
        }
        lock.lock()
        _ranges.append(range)
        let body = _body
        let cut = _cuts.isEmpty ? nil : _cuts.removeFirst()
        let announced = _announcedTotal
        let omitLength = _omitLength
        lock.unlock()
        var start = 0
        var head: String
        if range.hasPrefix("bytes="), let s = Int(range.dropFirst(6).split(separator: "-").first ?? "") {
            if s >= body.count {
                head = "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */\(announced ?? body.count)\r\nContent-Length: 0\r\n"
                start = body.count
            } else {
                start = s
                head = "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes \(s)-\(body.count - 1)/\(announced ?? body.count)\r\n"
                    + "Content-Length: \(body.count - s)\r\n"
            }
        } else {
            head = "HTTP/1.1 200 OK\r\n" + (omitLength ? "" : "Content-Length: \(body.count)\r\n")
        }
        head += "Content-Type: text/csv\r\nConnection: close\r\n\r\n"
        var out = Array(head.utf8)
        var payload = Array(body[start...])
        if let cut { payload = Array(payload.prefix(cut)) }
        out += payload
        out.withUnsafeBytes { p in
            var sent = 0
            while sent < p.count {
                let n = send(c, p.baseAddress! + sent, p.count - sent, Int32(MSG_NOSIGNAL))
                if n <= 0 { return }
                sent += n
            }
        }
        if cut != nil { usleep(20_000) } // let the client see the bytes before the close
        shutdown(c, Int32(SHUT_RDWR))
    }
}

final class NightlyDownloadTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("idx-dl-\(getpid())-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func body(_ n: Int) -> [UInt8] { (0 ..< n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) } }

    func testWholeDownload() throws {
        let b = body(50_000)
        let server = try RangeHTTPServer(body: b)
        defer { server.stop() }
        let r = try Downloader(attempts: 2, timeout: 5).fetch(server.url, to: dir + "/m.csv")
        XCTAssertEqual(r.bytes, 50_000)
        XCTAssertEqual(r.requests, 1)
        XCTAssertEqual(Array(FileManager.default.contents(atPath: dir + "/m.csv")!), b)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/m.csv.partial"))
        // Done already: no request at all.
        let again = try Downloader(attempts: 2, timeout: 5).fetch(server.url, to: dir + "/m.csv")
        XCTAssertTrue(again.alreadyComplete)
        XCTAssertEqual(server.ranges.count, 1)
    }

    func testResumesAfterCutTransfer() throws {
        let b = body(200_000)
        let server = try RangeHTTPServer(body: b)
        defer { server.stop() }
        // First response cut after 70,000 bytes, the second after 50,000 more.
        server.setCuts([70_000, 50_000])
        let r = try Downloader(attempts: 4, timeout: 5).fetch(server.url, to: dir + "/m.csv")
        XCTAssertEqual(r.requests, 3)
        XCTAssertEqual(server.ranges, ["", "bytes=70000-", "bytes=120000-"])
        XCTAssertEqual(Array(FileManager.default.contents(atPath: dir + "/m.csv")!), b)
    }

    func testResumesAcrossRunsFromThePartialFile() throws {
        let b = body(100_000)
        let server = try RangeHTTPServer(body: b)
        defer { server.stop() }
        // A run with a single attempt gets cut: the partial file stays and the error says so.
        server.setCuts([30_000])
        XCTAssertThrowsError(try Downloader(attempts: 1, timeout: 5).fetch(server.url, to: dir + "/m.csv")) { e in
            XCTAssertTrue("\(e)".contains("resumes"), "\(e)")
        }
        XCTAssertEqual(Downloader.fileSize(dir + "/m.csv.partial"), 30_000)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/m.csv"))
        // The next run asks only for the rest.
        let r = try Downloader(attempts: 1, timeout: 5).fetch(server.url, to: dir + "/m.csv")
        XCTAssertEqual(r.resumedFrom, 30_000)
        XCTAssertEqual(server.ranges, ["", "bytes=30000-"])
        XCTAssertEqual(Array(FileManager.default.contents(atPath: dir + "/m.csv")!), b)
    }

    func testCompletePartialFileWithoutSizeAsksOnceAndGets416() throws {
        let b = body(40_000)
        let server = try RangeHTTPServer(body: b)
        defer { server.stop() }
        // All bytes are on disk but the announced size was lost: the server answers 416, no body.
        _ = FileManager.default.createFile(atPath: dir + "/m.csv.partial", contents: Data(b))
        let r = try Downloader(attempts: 2, timeout: 5).fetch(server.url, to: dir + "/m.csv")
        XCTAssertEqual(r.bytes, 40_000)
        XCTAssertEqual(r.requests, 1)
        XCTAssertEqual(server.ranges, ["bytes=40000-"])
        XCTAssertEqual(Array(FileManager.default.contents(atPath: dir + "/m.csv")!), b)
    }

    func testFollowsRedirects() throws {
        let b = body(30_000)
        let server = try RangeHTTPServer(body: b)
        defer { server.stop() }
        let url = URL(string: "http://127.0.0.1:\(server.port)/old/movies.csv")!
        let r = try Downloader(attempts: 1, timeout: 5).fetch(url, to: dir + "/m.csv")
        XCTAssertEqual(r.bytes, 30_000)
        XCTAssertEqual(server.ranges, ["", ""])
        XCTAssertEqual(Array(FileManager.default.contents(atPath: dir + "/m.csv")!), b)
    }

    func testUnreachableServerSaysWhy() throws {
        // A port nobody listens on: the one a just-stopped server had.
        let server = try RangeHTTPServer(body: [])
        let url = server.url
        server.stop()
        XCTAssertThrowsError(try Downloader(attempts: 2, timeout: 5).fetch(url, to: dir + "/m.csv")) { e in
            XCTAssertTrue("\(e)".contains("incomplete after 2 attempts"), "\(e)")
            XCTAssertTrue("\(e)".lowercased().contains("connect"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/m.csv"))
    }

    /// The fields as idx_curl_get hands them over (curl_easy_nextheader's names and trimmed
    /// values, NUL-terminated), looked up ignoring case; an empty value stays a field.
    func testResponseHeadLookupIgnoresCase() {
        let pairs = ["content-range", "bytes 5-9/10", "Content-Length", "5", "X-Empty", "", "X-Long", "a b"]
        let bytes: [UInt8] = pairs.flatMap { Array($0.utf8) + [UInt8(0)] }
        let head = bytes.withUnsafeBytes { HTTPResponseHead(statusCode: 206, nameValuePairs: $0) }
        XCTAssertEqual(head.fields.count, 4)
        XCTAssertEqual(head.value(for: "Content-Length"), "5")
        XCTAssertEqual(head.value(for: "x-long"), "a b")
        XCTAssertEqual(head.value(for: "x-empty"), "")
        XCTAssertNil(head.value(for: "Location"))
        XCTAssertEqual(Downloader.contentLength(head), 5)
        XCTAssertEqual(Downloader.contentRange(head)?.0, 5)
        XCTAssertEqual(Downloader.contentRange(head)?.1, 10)
    }

    func testRejectsSizeMismatch() throws {
        let b = body(80_000)
        let server = try RangeHTTPServer(body: b)
        defer { server.stop() }
        server.setCuts([20_000])
        // On resume the server claims another total: the file changed (or the server lies).
        server.setAnnouncedTotal(90_000)
        XCTAssertThrowsError(try Downloader(attempts: 3, timeout: 5).fetch(server.url, to: dir + "/m.csv")) { e in
            XCTAssertTrue("\(e)".contains("size mismatch"), "\(e)")
            XCTAssertTrue("\(e)".contains("80000") && "\(e)".contains("90000"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/m.csv"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/m.csv.partial"))
        // A server that stops short every time: the download is never accepted.
        server.setAnnouncedTotal(nil)
        server.setCuts([10_000, 10_000])
        XCTAssertThrowsError(try Downloader(attempts: 2, timeout: 5).fetch(server.url, to: dir + "/m.csv")) { e in
            XCTAssertTrue("\(e)".contains("incomplete"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/m.csv"))
    }
}
