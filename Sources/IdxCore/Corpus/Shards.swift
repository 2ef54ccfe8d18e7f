import CZstd
import Foundation

/// zstd through its C API, one frame per shard.
enum Zstd {
    static func compress(_ bytes: UnsafeRawBufferPointer, level: Int32 = 3) throws -> [UInt8] {
        let bound = ZSTD_compressBound(bytes.count)
        var out = [UInt8](repeating: 0, count: bound)
        let n = out.withUnsafeMutableBytes { o in
            ZSTD_compress(o.baseAddress, bound, bytes.baseAddress, bytes.count, level)
        }
        if ZSTD_isError(n) != 0 { throw IdxError("zstd compression failed: \(String(cString: ZSTD_getErrorName(n))).") }
        out.removeSubrange(n...)
        return out
    }

    static func compress(_ bytes: [UInt8]) throws -> [UInt8] { try bytes.withUnsafeBytes { try compress($0) } }

    static func decompress(_ bytes: [UInt8], name: String) throws -> [UInt8] {
        try bytes.withUnsafeBytes { src in
            let size = ZSTD_getFrameContentSize(src.baseAddress, src.count)
            if size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > UInt64(Int.max) {
                throw IdxError("\(name): not a zstd frame with a known size (corrupted); run `idx ingest` again.")
            }
            var out = [UInt8](repeating: 0, count: Int(size))
            let n = out.withUnsafeMutableBytes { o in ZSTD_decompress(o.baseAddress, o.count, src.baseAddress, src.count) }
            if ZSTD_isError(n) != 0 || n != Int(size) {
                throw IdxError("\(name): zstd decompression failed (corrupted); run `idx ingest` again.")
            }
            return out
        }
    }
}

/// A token shard: the documents' ids, flat, and their offsets, compressed with zstd.
/// Uncompressed layout (little-endian):
///   magic "IDXTOKS1" | u64 documents | u64 tokens | u64 offsets[documents + 1] | i32 ids[tokens]
/// Ids are 32-bit whatever the vocabulary size. The manifest holds the XXH64 of the
/// compressed file and both counts.
enum TokenShard {
    static let magic = Array("IDXTOKS1".utf8)

    static func encode(ids: [Int32], offsets: [Int]) -> [UInt8] {
        let docs = offsets.count - 1
        var out = [UInt8]()
        out.reserveCapacity(24 + 8 * offsets.count + 4 * ids.count)
        out += magic
        appendLE(UInt64(docs), &out)
        appendLE(UInt64(ids.count), &out)
        for o in offsets { appendLE(UInt64(o), &out) }
        ids.withUnsafeBytes { out.append(contentsOf: $0) }  // x86/arm: little-endian
        return out
    }

    /// Parses a decompressed shard, appending to `corpus`; checks it against the manifest's counts.
    static func decode(_ b: [UInt8], name: String, documents: Int, tokens: Int, into corpus: inout TokenizedCorpus) throws {
        func bad(_ why: String) -> IdxError { IdxError("\(name): \(why); the corpus is damaged, run `idx ingest` again.") }
        guard b.count >= 24, Array(b[0 ..< 8]) == magic else { throw bad("not a token shard (bad magic)") }
        let docs = Int(readLE(b, 8)), toks = Int(readLE(b, 16))
        guard docs == documents, toks == tokens else {
            throw bad("holds \(docs) documents / \(toks) tokens, the manifest says \(documents) / \(tokens)")
        }
        guard b.count == 24 + 8 * (docs + 1) + 4 * toks else { throw bad("wrong size for its counts") }
        let base = corpus.tokens.count
        var previous = 0
        for i in 0 ... docs {
            let o = Int(readLE(b, 24 + 8 * i))
            if (i == 0 && o != 0) || o < previous || o > toks { throw bad("offsets out of order") }
            previous = o
            if i > 0 { corpus.offsets.append(base + o) }
        }
        guard previous == toks else { throw bad("offsets do not cover the tokens") }
        let start = 24 + 8 * (docs + 1)
        b.withUnsafeBytes { raw in
            let ids = UnsafeRawBufferPointer(rebasing: raw[start ..< start + 4 * toks])
            corpus.tokens.append(contentsOf: ids.bindMemory(to: Int32.self))
        }
    }

    @inline(__always) static func appendLE(_ v: UInt64, _ out: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }

    @inline(__always) static func readLE(_ b: [UInt8], _ o: Int) -> UInt64 {
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
