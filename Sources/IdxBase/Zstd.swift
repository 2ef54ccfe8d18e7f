import CZstd

/// One-shot zstd frames, shared by the token shards and the vector segments. Errors name
/// the file and end with `remedy`, what the user should do (re-ingest, re-index).
public enum Zstd {
    /// Compresses into one frame. Only fails on allocation, which is fatal anyway.
    public static func compress(_ input: UnsafeRawBufferPointer, level: Int32) -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        var out = [UInt8](repeating: 0, count: bound)
        let n = out.withUnsafeMutableBytes { o in
            ZSTD_compress(o.baseAddress, bound, input.baseAddress, input.count, level)
        }
        precondition(ZSTD_isError(n) == 0, "zstd compression failed: \(String(cString: ZSTD_getErrorName(n)))")
        out.removeSubrange(n...)
        return out
    }

    public static func compress(_ bytes: [UInt8], level: Int32) -> [UInt8] {
        bytes.withUnsafeBytes { compress($0, level: level) }
    }

    /// Decompresses a frame that records its content size, of at most `limit` bytes (a frame
    /// header is not to be trusted with the allocation: it may claim terabytes).
    public static func decompress(_ bytes: [UInt8], name: String, remedy: String, limit: Int = 1 << 30) throws -> [UInt8] {
        try bytes.withUnsafeBytes { src in
            let size = ZSTD_getFrameContentSize(src.baseAddress, src.count)
            if size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > UInt64(Int.max) {
                throw IdxError("\(name): not a zstd frame with a known size (corrupted); \(remedy).")
            }
            if size > UInt64(max(0, limit)) {
                throw IdxError("\(name): its zstd frame claims \(size) bytes, more than the \(limit) it can hold (corrupted); \(remedy).")
            }
            var out = [UInt8](repeating: 0, count: Int(size))
            try out.withUnsafeMutableBytes { try decompress(src, into: $0, context: nil, name: name, remedy: remedy) }
            return out
        }
    }

    /// Decompresses one frame into exactly `output` (its size is known to the caller).
    public static func decompress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer,
                           context: OpaquePointer?, name: String, remedy: String) throws {
        let n: Int
        if let context {
            n = ZSTD_decompressDCtx(context, output.baseAddress, output.count, input.baseAddress, input.count)
        } else {
            n = ZSTD_decompress(output.baseAddress, output.count, input.baseAddress, input.count)
        }
        if ZSTD_isError(n) != 0 || n != output.count {
            let why = ZSTD_isError(n) != 0 ? String(cString: ZSTD_getErrorName(n)) : "\(n) bytes instead of \(output.count)"
            throw IdxError("\(name): a compressed block does not decompress (\(why)); the file is corrupted: \(remedy).")
        }
    }
}
