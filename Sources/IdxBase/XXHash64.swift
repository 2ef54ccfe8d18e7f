import CXXHash
import Foundation

/// XXH64 (Yann Collet's xxHash, 64-bit), streaming, from Debian's libxxhash. Used for shard and
/// segment checksums and for content hashes of inputs: fast enough to hash a multi-gigabyte
/// corpus while reading it. A value: copying it copies the state (XXH64_state_t holds no
/// pointer), and `finalize` leaves it usable.
public struct XXHash64: Sendable {
    private var state = XXH64_state_t()

    public init(seed: UInt64 = 0) {
        XXH64_reset(&state, seed)
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let p = bytes.baseAddress, bytes.count > 0 else { return }
        XXH64_update(&state, p, bytes.count)
    }

    public mutating func update<C: ContiguousBytes>(_ data: C) {
        data.withUnsafeBytes { update($0) }
    }

    public func finalize() -> UInt64 {
        var s = state
        return XXH64_digest(&s)
    }

    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        XXH64(bytes.baseAddress, bytes.count, seed)
    }

    public static func hash<C: ContiguousBytes>(_ data: C, seed: UInt64 = 0) -> UInt64 {
        data.withUnsafeBytes { hash($0, seed: seed) }
    }

    /// Lower-case 16-digit hex, the form manifests store.
    public static func hex(_ value: UInt64) -> String {
        let s = String(value, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    /// Hashes a whole file in 1 MiB reads.
    public static func hashFile(at path: String) throws -> (hash: UInt64, size: Int64) {
        guard let fh = FileHandle(forReadingAtPath: path) else {
            throw IdxError("\(path): cannot open the file for reading; check that it exists and is readable.")
        }
        defer { try? fh.close() }
        var x = XXHash64()
        var size: Int64 = 0
        while true {
            let chunk = try fh.read(upToCount: 1 << 20) ?? Data()
            if chunk.isEmpty { break }
            size += Int64(chunk.count)
            x.update(chunk)
        }
        return (x.finalize(), size)
    }
}

import Foundation
