import CCurl
import Foundation
import IdxBase

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
    /// Largest file accepted (`[inbox] max_file_bytes`): a body past it (announced or sent,
    /// with or without Content-Length) is refused and its partial file removed.
    public var maxBytes: Int64 = NightlyConfig.defaultMaxFileBytes
    /// Longest a fetch may take in all, however slowly the bytes trickle in (the idle
    /// timeout alone never ends a server that sends one byte a second).
    public var maxSeconds: TimeInterval = 3600

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
        let deadline = Date().addingTimeInterval(maxSeconds)
        var requests = 0
        var lastProblem = ""

        func reject(_ why: String) -> IdxError {
            try? fm.removeItem(atPath: partial)
            try? fm.removeItem(atPath: sizeFile)
            return IdxError("\(url.absoluteString): \(why); the partial download was removed, the next run starts over.")
        }
        func remember(_ total: Int64) throws {
            if total > maxBytes {
                throw reject("the server announces \(total) bytes, more than [inbox] max_file_bytes (\(maxBytes))")
            }
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
            let transfer: Transfer
            do {
                transfer = try Transfer.run(url, range: have > 0 ? "\(have)-" : nil, appendingTo: partial,
                                            timeout: timeout, limit: maxBytes, deadline: deadline, onResponse: { response in
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
            } catch let e as Transfer.LimitExceeded {
                throw reject(e.reason)
            }
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

    static func header(_ r: HTTPResponseHead, _ name: String) -> String? { r.value(for: name) }

    static func contentLength(_ r: HTTPResponseHead) -> Int64? {
        header(r, "Content-Length").flatMap { Int64($0.trimmingCharacters(in: .whitespaces)) }
    }

    /// `bytes start-end/total` (total may be `*`) or `bytes */total` → (start, total).
    static func contentRange(_ r: HTTPResponseHead) -> (Int64, Int64?)? {
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

    /// One HTTP GET (through libcurl, see Sources/CCurl) whose body is written
    /// to a file as it arrives, so a cut connection keeps what it delivered.
    final class Transfer {
        let path: String
        let onResponse: (HTTPResponseHead) throws -> Int64?
        var handle: FileHandle?
        /// curl's reason when the transfer failed (connect, TLS, a cut body): worth another attempt.
        var error: String?
        /// An error of ours (a rejected response, a failed write): ends the download.
        var fatal: Error?
        var limit: Int64 = .max
        var deadline: Date = .distantFuture
        /// Where the next body byte lands in the file.
        var position: Int64 = 0

        init(path: String, onResponse: @escaping (HTTPResponseHead) throws -> Int64?) {
            self.path = path
            self.onResponse = onResponse
        }

        /// `range` is the Range header's value after `bytes=`; `onResponse`
        /// returns where in the file the body goes, or nil to ignore the body.
        /// The body went past the size limit or the deadline.
        struct LimitExceeded: Error { let reason: String }

        static func run(_ url: URL, range: String?, appendingTo path: String, timeout: TimeInterval,
                        limit: Int64 = .max, deadline: Date = .distantFuture,
                        onResponse: @escaping (HTTPResponseHead) throws -> Int64?) throws -> Transfer {
            let t = Transfer(path: path, onResponse: onResponse)
            t.limit = limit; t.deadline = deadline
            let response: idx_curl_response_fn = { context, status, fields, length in
                let t = Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue()
                let bytes = fields.map { UnsafeRawBufferPointer(start: $0, count: length) } ?? UnsafeRawBufferPointer(start: nil, count: 0)
                return t.begin(HTTPResponseHead(statusCode: status, nameValuePairs: bytes))
            }
            let body: idx_curl_body_fn = { context, _, bytes, length in
                let t = Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue()
                guard let bytes else { return 0 }
                return t.write(UnsafeRawBufferPointer(start: bytes, count: length)) ? 0 : 1
            }
            var reason = [CChar](repeating: 0, count: 1024)
            let rc = withExtendedLifetime(t) {
                idx_curl_get(url.absoluteString, range, timeout, timeout, response, body,
                             Unmanaged.passUnretained(t).toOpaque(), &reason, reason.count)
            }
            try? t.handle?.synchronize()
            try? t.handle?.close()
            let text = String(decoding: reason.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            switch Int(rc) {
            case IDX_CURL_OK: break
            case IDX_CURL_ABORTED: throw t.fatal ?? IdxError("\(url.absoluteString): the transfer was stopped.")
            case IDX_CURL_NOT_LOADED: throw IdxError("\(url.absoluteString): \(text).")
            default: t.error = text
            }
            return t
        }

        /// The response head arrived: where the body goes, IDX_CURL_SKIP_BODY or IDX_CURL_ABORT.
        private func begin(_ head: HTTPResponseHead) -> Int64 {
            do {
                guard let writeAt = try onResponse(head) else { return Int64(IDX_CURL_SKIP_BODY) }
                position = writeAt
                let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
                handle = fh
                try fh.truncate(atOffset: UInt64(writeAt))
                try fh.seek(toOffset: UInt64(writeAt))
                return writeAt
            } catch {
                fatal = error
                return Int64(IDX_CURL_ABORT)
            }
        }

        private func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
            guard let handle, let base = bytes.baseAddress, bytes.count > 0 else { return true }
            position += Int64(bytes.count)
            if position > limit {
                fatal = LimitExceeded(reason: "the body runs past [inbox] max_file_bytes (\(limit) bytes)")
                return false
            }
            if Date() > deadline {
                fatal = LimitExceeded(reason: "the download took longer than its time limit")
                return false
            }
            do {
                try handle.write(contentsOf: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: base),
                                                  count: bytes.count, deallocator: .none))
                return true
            } catch {
                fatal = error
                return false
            }
        }
    }
}

/// The status and header fields of an HTTP response (the final one, after redirects).
struct HTTPResponseHead {
    var statusCode: Int
    var fields: [(name: String, value: String)]

    init(statusCode: Int, fields: [(name: String, value: String)]) {
        self.statusCode = statusCode
        self.fields = fields
    }

    /// The fields as idx_curl_get hands them over: NUL-terminated strings, name then value.
    init(statusCode: Int, nameValuePairs bytes: UnsafeRawBufferPointer) {
        var strings = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        if strings.last == "" { strings.removeLast() }  // after the last terminator
        let fields = stride(from: 0, to: strings.count - 1, by: 2).map { (name: strings[$0], value: strings[$0 + 1]) }
        self.init(statusCode: statusCode, fields: fields)
    }

    /// The first field called `name`, ignoring case.
    func value(for name: String) -> String? {
        fields.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }
}
