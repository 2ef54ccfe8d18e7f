/// XXH64 (Yann Collet's xxHash, 64-bit), streaming. Used for shard and segment
/// checksums and for content hashes of inputs: fast enough to hash a
/// multi-gigabyte corpus while reading it.
public struct XXHash64 {
    private static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    private static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    private static let p3: UInt64 = 0x1656_67B1_9E37_79F9
    private static let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
    private static let p5: UInt64 = 0x27D4_EB2F_1656_67C5

    private let seed: UInt64
    private var v1, v2, v3, v4: UInt64
    private var buffer = [UInt8](repeating: 0, count: 32)
    private var buffered = 0
    private var total: UInt64 = 0

    public init(seed: UInt64 = 0) {
        self.seed = seed
        v1 = seed &+ Self.p1 &+ Self.p2
        v2 = seed &+ Self.p2
        v3 = seed
        v4 = seed &- Self.p1
    }

    @inline(__always) private static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }
    @inline(__always) private static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* p2, 31) &* p1
    }
    @inline(__always) private static func merge(_ acc: UInt64, _ v: UInt64) -> UInt64 {
        (acc ^ round(0, v)) &* p1 &+ p4
    }
    @inline(__always) private static func load64(_ p: UnsafeRawPointer, _ o: Int) -> UInt64 {
        UInt64(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt64.self))
    }

    private mutating func stripes(_ p: UnsafeRawPointer, _ count: Int) {
        var o = 0
        while o + 32 <= count {
            v1 = Self.round(v1, Self.load64(p, o))
            v2 = Self.round(v2, Self.load64(p, o + 8))
            v3 = Self.round(v3, Self.load64(p, o + 16))
            v4 = Self.round(v4, Self.load64(p, o + 24))
            o += 32
        }
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var p = bytes.baseAddress, bytes.count > 0 else { return }
        var n = bytes.count
        total &+= UInt64(n)
        if buffered > 0 {
            let take = min(32 - buffered, n)
            buffer.withUnsafeMutableBytes { b in
                (b.baseAddress! + buffered).copyMemory(from: p, byteCount: take)
            }
            buffered += take; p += take; n -= take
            if buffered < 32 { return }
            buffer.withUnsafeBytes { b in stripes(b.baseAddress!, 32) }
            buffered = 0
        }
        let whole = n & ~31
        stripes(p, whole)
        if n > whole {
            buffer.withUnsafeMutableBytes { b in
                b.baseAddress!.copyMemory(from: p + whole, byteCount: n - whole)
            }
            buffered = n - whole
        }
    }

    public mutating func update<C: ContiguousBytes>(_ data: C) {
        data.withUnsafeBytes { update($0) }
    }

    public func finalize() -> UInt64 {
        var h: UInt64
        if total >= 32 {
            h = Self.rotl(v1, 1) &+ Self.rotl(v2, 7) &+ Self.rotl(v3, 12) &+ Self.rotl(v4, 18)
            h = Self.merge(h, v1); h = Self.merge(h, v2); h = Self.merge(h, v3); h = Self.merge(h, v4)
        } else {
            h = seed &+ Self.p5
        }
        h &+= total
        buffer.withUnsafeBytes { b in
            let p = b.baseAddress!
            var o = 0
            while o + 8 <= buffered {
                h ^= Self.round(0, Self.load64(p, o))
                h = Self.rotl(h, 27) &* Self.p1 &+ Self.p4
                o += 8
            }
            if o + 4 <= buffered {
                h ^= UInt64(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt32.self))) &* Self.p1
                h = Self.rotl(h, 23) &* Self.p2 &+ Self.p3
                o += 4
            }
            while o < buffered {
                h ^= UInt64(p.load(fromByteOffset: o, as: UInt8.self)) &* Self.p5
                h = Self.rotl(h, 11) &* Self.p1
                o += 1
            }
        }
        h ^= h >> 33; h = h &* Self.p2
        h ^= h >> 29; h = h &* Self.p3
        h ^= h >> 32
        return h
    }

    public static func hash<C: ContiguousBytes>(_ data: C, seed: UInt64 = 0) -> UInt64 {
        var x = XXHash64(seed: seed); x.update(data); return x.finalize()
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
