import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Downloads an http(s) file into a folder with resume: bytes land in
/// `<dest>.partial`; a later attempt (in this run or the next) asks for the rest
/// with `Range: bytes=<have>-`. The size the server announced first
/// (Content-Length of a 200, or the total of a 206's Content-Range) is kept in
/// `<dest>.partial.size`; the file is renamed to `dest` only when it has exactly
/// that many bytes. A server that announces another size later (the file
/// changed under us) or sends more than announced is rejected and the partial
/// file removed, so the next run starts over.
public struct Downloader {
    public var attempts: Int
    public var timeout: TimeInterval

    public init(attempts: Int = 4, timeout: TimeInterval = 60) {
        self.attempts = max(1, attempts)
        self.timeout = timeout
    }

    public struct Result: Equatable {
        public var path: String
        public var bytes: Int64
        /// Bytes that were already on disk from an earlier, cut transfer.
        public var resumedFrom: Int64
        /// Requests made (1 when nothing was cut).
        public var requests: Int
        public var alreadyComplete: Bool
    }

    /// Fetches `url` to `dest` (a file path). Returns at once if `dest` exists.
    public func fetch(_ url: URL, to dest: String) throws -> Result {
        let fm = FileManager.default
        if let size = Self.fileSize(dest) {
            return Result(path: dest, bytes: size, resumedFrom: size, requests: 0, alreadyComplete: true)
        }
        try AtomicFile.createParent(of: dest)
        let partial = dest + ".partial"
        let sizeFile = partial + ".size"
        var expected: Int64? = (try? String(contentsOfFile: sizeFile, encoding: .utf8)).flatMap {
            Int64($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        if !fm.fileExists(atPath: partial) {
            _ = fm.createFile(atPath: partial, contents: nil)
            expected = nil
            try? fm.removeItem(atPath: sizeFile)
        }
        let resumedFrom = Self.fileSize(partial) ?? 0
        var requests = 0
        var lastProblem = ""

        func reject(_ why: String) -> IdxError {
            try? fm.removeItem(atPath: partial)
            try? fm.removeItem(atPath: sizeFile)
            return IdxError("\(url.absoluteString): \(why); the partial download was removed, the next run starts over.")
        }
        func remember(_ total: Int64) throws {
            if let expected, expected != total {
                throw reject("size mismatch: the server first announced \(expected) bytes, now \(total)")
            }
            if expected == nil {
                expected = total
                try AtomicFile.write(Data(String(total).utf8), to: sizeFile)
            }
        }

        while requests < attempts {
            requests += 1
            let have = Self.fileSize(partial) ?? 0
            if let expected, have == expected { break }
            if let expected, have > expected {
                throw reject("size mismatch: \(have) bytes on disk, more than the \(expected) announced")
            }
            var request = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalCacheData, timeoutInterval: timeout)
            if have > 0 { request.setValue("bytes=\(have)-", forHTTPHeaderField: "Range") }
            request.setValue("identity", forHTTPHeaderField: "Accept-Encoding")
            let transfer = try Transfer.run(request, appendingTo: partial, from: have, timeout: timeout, onResponse: { response in
                switch response.statusCode {
                case 200:
                    // No range support (or a fresh start): the body is the whole file.
                    if let len = Self.contentLength(response) { try remember(len) }
                    return 0
                case 206:
                    guard let (start, total) = Self.contentRange(response) else {
                        throw reject("a 206 response without a usable Content-Range header")
                    }
                    guard start == have else {
                        throw reject("the server resumed at byte \(start), not at \(have) as asked")
                    }
                    if let total { try remember(total) }
                    return have
                case 416:
                    // Nothing left to send: fine only if we hold the whole file.
                    if let (_, total) = Self.contentRange(response), let total { try remember(total) }
                    return nil
                default:
                    throw IdxError("\(url.absoluteString): the server answered HTTP \(response.statusCode); check the URL in the inbox.")
                }
            })
            if let error = transfer.error {
                lastProblem = "the transfer was cut after \(Self.fileSize(partial) ?? 0) bytes (\(error))"
                continue
            }
            let now = Self.fileSize(partial) ?? 0
            if let expected {
                if now == expected { break }
                if now > expected { throw reject("size mismatch: received \(now) bytes, \(expected) were announced") }
                lastProblem = "the transfer ended after \(now) of \(expected) bytes"
                continue
            }
            // No size announced (chunked): a clean end of the body is the end of the file.
            expected = now
            break
        }
        let final = Self.fileSize(partial) ?? 0
        guard let expected, final == expected else {
            throw IdxError("\(url.absoluteString): download incomplete after \(requests) attempts: \(lastProblem); "
                + "\(final) bytes are kept in \(partial) and the next run resumes from there.")
        }
        let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: partial))
        try fh.synchronize()
        try fh.close()
        try AtomicFile.rename(partial, to: dest)
        try? fm.removeItem(atPath: sizeFile)
        return Result(path: dest, bytes: final, resumedFrom: resumedFrom, requests: requests, alreadyComplete: false)
    }

    static func fileSize(_ path: String) -> Int64? {
        guard let a = try? FileManager.default.attributesOfItem(atPath: path) else { return nil }
        return (a[.size] as? NSNumber)?.int64Value
    }

    static func header(_ r: HTTPURLResponse, _ name: String) -> String? {
        for (k, v) in r.allHeaderFields {
            if let k = k as? String, k.caseInsensitiveCompare(name) == .orderedSame { return v as? String }
        }
        return nil
    }

    static func contentLength(_ r: HTTPURLResponse) -> Int64? {
        header(r, "Content-Length").flatMap { Int64($0.trimmingCharacters(in: .whitespaces)) }
    }

    /// `bytes start-end/total` (total may be `*`) or `bytes */total` → (start, total).
    static func contentRange(_ r: HTTPURLResponse) -> (Int64, Int64?)? {
        guard let v = header(r, "Content-Range")?.trimmingCharacters(in: .whitespaces),
              v.lowercased().hasPrefix("bytes ") else { return nil }
        let rest = v.dropFirst(6)
        let parts = rest.split(separator: "/", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return nil }
        let total = Int64(parts[1])
        if parts[0] == "*" { return (-1, total) }
        guard let start = Int64(parts[0].split(separator: "-").first ?? "") else { return nil }
        return (start, total)
    }

    /// One HTTP request whose body is appended to a file as it arrives, so a
    /// cut connection keeps what it delivered.
    final class Transfer: NSObject, URLSessionDataDelegate, @unchecked Sendable {
        let path: String
        let offset: Int64
        let onResponse: (HTTPURLResponse) throws -> Int64?
        var handle: FileHandle?
        var error: Error?
        var skipBody = false
        let done = DispatchSemaphore(value: 0)

        init(path: String, offset: Int64, onResponse: @escaping (HTTPURLResponse) throws -> Int64?) {
            self.path = path
            self.offset = offset
            self.onResponse = onResponse
        }

        static func run(_ request: URLRequest, appendingTo path: String, from offset: Int64, timeout: TimeInterval,
                        onResponse: @escaping (HTTPURLResponse) throws -> Int64?) throws -> Transfer {
            let t = Transfer(path: path, offset: offset, onResponse: onResponse)
            let config = URLSessionConfiguration.ephemeral
            config.timeoutIntervalForRequest = timeout
            config.requestCachePolicy = .reloadIgnoringLocalCacheData
            let queue = OperationQueue()
            queue.maxConcurrentOperationCount = 1
            let session = URLSession(configuration: config, delegate: t, delegateQueue: queue)
            session.dataTask(with: request).resume()
            t.done.wait()
            session.finishTasksAndInvalidate()
            try? t.handle?.synchronize()
            try? t.handle?.close()
            if let fatal = t.fatal { throw fatal }
            return t
        }

        var fatal: Error?

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
            guard let http = response as? HTTPURLResponse else {
                fatal = IdxError("\(response.url?.absoluteString ?? "?"): not an HTTP response.")
                completionHandler(.cancel)
                return
            }
            do {
                guard let writeAt = try onResponse(http) else {
                    skipBody = true
                    completionHandler(.allow)
                    return
                }
                let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
                try fh.truncate(atOffset: UInt64(writeAt))
                try fh.seek(toOffset: UInt64(writeAt))
                handle = fh
                completionHandler(.allow)
            } catch {
                fatal = error
                completionHandler(.cancel)
            }
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
            guard !skipBody, fatal == nil, let handle else { return }
            do { try handle.write(contentsOf: data) } catch { fatal = error; dataTask.cancel() }
        }

        func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
            if let error, fatal == nil { self.error = error }
            done.signal()
        }
    }
}
