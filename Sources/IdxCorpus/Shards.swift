import CZstd
import Foundation
import IdxBase

/// A token shard: the documents' ids, flat, and their offsets, compressed with zstd.
/// Uncompressed layout (little-endian):
///   magic "IDXTOKS1" | u32 idBytes (2 or 4) | u32 0 | u64 documents | u64 tokens
///   | u64 offsets[documents + 1] | ids[tokens] (u16 when idBytes is 2, i32 when 4)
/// 16-bit ids are used only when the vocabulary has at most 65,536 entries (the width is
/// in the header; readers always return Int32). The manifest holds the XXH64 of the
/// compressed file and both counts.
public enum TokenShard {
    static let magic = Array("IDXTOKS1".utf8)
    public static let headerBytes = 32

    static func idBytes(vocabSize: Int) -> Int { vocabSize <= 65_536 ? 2 : 4 }

    static func encode(ids: [Int32], offsets: [Int], idBytes: Int) -> [UInt8] {
        precondition(idBytes == 2 || idBytes == 4)
        let docs = offsets.count - 1
        let size = headerBytes + 8 * offsets.count + idBytes * ids.count
        var out = [UInt8](repeating: 0, count: size)
        out.withUnsafeMutableBytes { o in
            magic.withUnsafeBytes { o.copyMemory(from: $0) }
            o.storeBytes(of: UInt32(idBytes).littleEndian, toByteOffset: 8, as: UInt32.self)
            o.storeBytes(of: UInt64(docs).littleEndian, toByteOffset: 16, as: UInt64.self)
            o.storeBytes(of: UInt64(ids.count).littleEndian, toByteOffset: 24, as: UInt64.self)
            var at = headerBytes
            for v in offsets { o.storeBytes(of: UInt64(v).littleEndian, toByteOffset: at, as: UInt64.self); at += 8 }
            if idBytes == 4 {
                for v in ids { o.storeBytes(of: v.littleEndian, toByteOffset: at, as: Int32.self); at += 4 }
            } else {
                for v in ids {
                    precondition(v >= 0 && v <= 65_535, "16-bit token shard with id \(v)")
                    o.storeBytes(of: UInt16(v).littleEndian, toByteOffset: at, as: UInt16.self); at += 2
                }
            }
        }
        return out
    }

    /// Parses a decompressed shard, appending to `corpus`; checks it against the manifest's counts.
    public static func decode(_ b: [UInt8], name: String, documents: Int, tokens: Int, into corpus: inout TokenizedCorpus) throws {
        func bad(_ why: String) -> IdxError { IdxError("\(name): \(why); the corpus is damaged, run `idx ingest` again.") }
        guard b.count >= headerBytes, Array(b[0 ..< 8]) == magic else { throw bad("not a token shard (bad magic)") }
        let width = Int(readLE(b, 8) & 0xFFFF_FFFF)
        let docs = readLE(b, 16), toks = readLE(b, 24)
        guard width == 2 || width == 4 else { throw bad("unknown id width \(width)") }
        guard documents >= 0, tokens >= 0, docs == UInt64(documents), toks == UInt64(tokens) else {
            throw bad("holds \(docs) documents / \(toks) tokens, the manifest says \(documents) / \(tokens)")
        }
        // Counts bounded by the bytes before any arithmetic on them (a lie must not overflow).
        guard documents < b.count / 8, tokens <= b.count / width,
              b.count == headerBytes + 8 * (documents + 1) + width * tokens else { throw bad("wrong size for its counts") }
        let base = corpus.tokens.count
        var previous = 0
        for i in 0 ... documents {
            let raw = readLE(b, headerBytes + 8 * i)
            guard raw <= UInt64(tokens) else { throw bad("offset \(raw) of document \(i) is past its \(tokens) tokens") }
            let o = Int(raw)
            if (i == 0 && o != 0) || o < previous { throw bad("offsets out of order") }
            previous = o
            if i > 0 { corpus.offsets.append(base + o) }
        }
        guard previous == tokens else { throw bad("offsets do not cover the tokens") }
        let start = headerBytes + 8 * (documents + 1)
        b.withUnsafeBytes { raw in
            if width == 4 {
                for k in 0 ..< tokens { corpus.tokens.append(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: start + 4 * k, as: Int32.self))) }
            } else {
                for k in 0 ..< tokens { corpus.tokens.append(Int32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: start + 2 * k, as: UInt16.self)))) }
            }
        }
    }

    @inline(__always) static func appendLE(_ v: UInt64, _ out: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }

    @inline(__always) public static func readLE(_ b: [UInt8], _ o: Int) -> UInt64 {
        b.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
    }
}

/// Writes a file that is published later by renaming its folder: write + fsync.
enum SyncedFile {
    static func write(_ bytes: [UInt8], to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        if fd < 0 { throw IdxError("\(path): cannot create the file: \(String(cString: strerror(errno))).") }
        defer { close(fd) }
        var done = 0
        try bytes.withUnsafeBytes { b in
            while done < b.count {
                let n = Foundation.write(fd, b.baseAddress! + done, b.count - done)
                if n <= 0 { throw IdxError("\(path): write failed: \(String(cString: strerror(errno))) (disk full?).") }
                done += n
            }
        }
        if fsync(fd) != 0 { throw IdxError("\(path): fsync failed: \(String(cString: strerror(errno))).") }
    }

    static func read(_ path: String) throws -> [UInt8] {
        guard let d = FileManager.default.contents(atPath: path) else {
            throw IdxError("\(path): missing or unreadable; the corpus is incomplete, run `idx ingest` again.")
        }
        return [UInt8](d)
    }
}

/// An append-only file with a write buffer (the spill of cleaned texts).
final class BufferedWriter {
    let path: String
    private let fd: Int32
    private var buffer: [UInt8] = []
    private let limit = 1 << 20

    init(path: String) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        if fd < 0 { throw IdxError("\(path): cannot create the file: \(String(cString: strerror(errno))).") }
        buffer.reserveCapacity(limit + 4096)
    }

    deinit { close(fd) }

    @inline(__always) func append(_ p: UnsafePointer<UInt8>, _ n: Int) throws {
        buffer.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        if buffer.count >= limit { try flush() }
    }

    @inline(__always) func append(byte: UInt8) { buffer.append(byte) }

    func flush() throws {
        var done = 0
        try buffer.withUnsafeBytes { b in
            while done < b.count {
                let n = Foundation.write(fd, b.baseAddress! + done, b.count - done)
                if n <= 0 { throw IdxError("\(path): write failed: \(String(cString: strerror(errno))) (disk full?).") }
                done += n
            }
        }
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Compresses and writes shards on a background thread while the caller keeps parsing or
/// encoding. At most one shard is in flight (memory: the shard being filled + one being
/// written). Results (XXH64, compressed size) are collected by file name.
/// @unchecked Sendable: the writer thread and the caller share `results` and `failure` under
/// `lock` only; the rest is immutable or a Dispatch primitive.
final class BackgroundShardWriter: @unchecked Sendable {
    private let directory: String
    private let queue = DispatchQueue(label: "idx.ingest.shard-writer")
    private let inFlight = DispatchSemaphore(value: 1)
    private let group = DispatchGroup()
    private let lock = NSLock()
    private var results: [String: (hash: String, bytes: Int)] = [:]
    private var failure: Error?

    init(directory: String) { self.directory = directory }

    /// Queues `raw` to be compressed into `directory/name`; waits while a shard is in flight.
    func submit(_ name: String, _ raw: [UInt8]) throws {
        try rethrowFailure()
        inFlight.wait()
        group.enter()
        let path = directory + "/" + name
        queue.async { [self] in
            defer { inFlight.signal(); group.leave() }
            do {
                // Level 1: shards are written once per ingest and read often; level 3 is
                // 5% smaller and about twice as slow to write.
                let packed = Zstd.compress(raw, level: 1)
                try SyncedFile.write(packed, to: path)
                let r = (XXHash64.hex(XXHash64.hash(packed)), packed.count)
                lock.lock(); results[name] = r; lock.unlock()
            } catch {
                lock.lock(); if failure == nil { failure = error }; lock.unlock()
            }
        }
    }

    private func rethrowFailure() throws {
        lock.lock(); let f = failure; lock.unlock()
        if let f { throw f }
    }

    /// Waits for every queued shard (also on error paths, before the staging folder is removed).
    func waitAll() { group.wait() }

    /// Waits, then returns the results or the first error.
    func finish() throws -> [String: (hash: String, bytes: Int)] {
        group.wait()
        try rethrowFailure()
        lock.lock(); defer { lock.unlock() }
        return results
    }
}
