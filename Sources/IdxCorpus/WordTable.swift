/// An open-addressing hash table from byte strings to a 64-bit value, with the
/// strings in one flat arena: no String and no allocation per word. Used both
/// for the training counts (value = count) and for encoding (value = id).
struct WordTable: Sendable {
    private(set) var arena: [UInt8] = []
    private(set) var starts: [Int] = []
    private(set) var lengths: [Int32] = []
    var values: [Int64] = []
    private var hashes: [UInt64] = []
    /// 0 = empty, else (upper 32 bits of the hash) << 32 | (entry index + 1): the tag
    /// rejects most mismatches without touching the entry arrays (cache misses).
    private var slots: [UInt64]
    private var mask: Int

    init(capacity: Int = 1024) {
        var n = 16
        while n < capacity * 2 { n <<= 1 }
        slots = [UInt64](repeating: 0, count: n)
        mask = n - 1
    }

    var count: Int { starts.count }

    @inline(__always)
    static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a, then a final mix
        var i = 0
        while i < n { h = (h ^ UInt64(p[i])) &* 0x0000_0100_0000_01B3; i += 1 }
        h ^= h >> 29; h = h &* 0xBF58_476D_1CE4_E5B9; h ^= h >> 32
        return h
    }

    /// The entry index of the word, or -1.
    @inline(__always)
    func find(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int {
        let h = Self.hash(p, n)
        return findHashed(p, n, h)
    }

    @inline(__always)
    private func findHashed(_ p: UnsafePointer<UInt8>, _ n: Int, _ h: UInt64) -> Int {
        return slots.withUnsafeBufferPointer { slots in
            var s = Int(truncatingIfNeeded: h) & mask
            let tag = h & 0xFFFF_FFFF_0000_0000
            while true {
                let v = slots[s]
                if v == 0 { return -1 }
                if v & 0xFFFF_FFFF_0000_0000 == tag {
                    let e = Int(v & 0xFFFF_FFFF) - 1
                    if Int(lengths[e]) == n && equal(e, p, n) { return e }
                }
                s = (s + 1) & mask
            }
        }
    }

    @inline(__always)
    private func equal(_ e: Int, _ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        // Words are short: a byte loop beats a call to memcmp.
        arena.withUnsafeBufferPointer { a in
            let q = a.baseAddress! + starts[e]
            var i = 0
            while i < n { if q[i] != p[i] { return false }; i += 1 }
            return true
        }
    }

    /// Adds `delta` to the word's value, inserting it (with value `delta`) when new.
    /// Returns the entry index.
    @discardableResult @inline(__always)
    mutating func add(_ p: UnsafePointer<UInt8>, _ n: Int, _ delta: Int64) -> Int {
        let h = Self.hash(p, n)
        let e = findHashed(p, n, h)
        if e >= 0 { values[e] += delta; return e }
        return insertNew(p, n, h, delta)
    }

    /// Inserts a word known to be absent.
    mutating func insertNew(_ p: UnsafePointer<UInt8>, _ n: Int, _ h: UInt64, _ value: Int64) -> Int {
        if (count + 1) * 2 > slots.count { grow() }
        let e = count
        starts.append(arena.count)
        arena.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        lengths.append(Int32(n))
        values.append(value)
        hashes.append(h)
        place(e, h)
        return e
    }

    mutating func insert(_ bytes: [UInt8], value: Int64) -> Bool {
        bytes.withUnsafeBufferPointer { b in
            let p = b.baseAddress ?? UnsafePointer(bitPattern: 1)!
            let h = Self.hash(p, b.count)
            if findHashed(p, b.count, h) >= 0 { return false }
            _ = insertNew(p, b.count, h, value)
            return true
        }
    }

    private mutating func place(_ e: Int, _ h: UInt64) {
        var s = Int(truncatingIfNeeded: h) & mask
        while slots[s] != 0 { s = (s + 1) & mask }
        slots[s] = (h & 0xFFFF_FFFF_0000_0000) | UInt64(e + 1)
    }

    private mutating func grow() {
        slots = [UInt64](repeating: 0, count: slots.count * 2)
        mask = slots.count - 1
        for e in 0 ..< count { place(e, hashes[e]) }
    }

    func bytes(_ e: Int) -> ArraySlice<UInt8> { arena[starts[e] ..< starts[e] + Int(lengths[e])] }

    /// Byte-order comparison of two entries (Rust's `String` order).
    func less(_ a: Int, _ b: Int) -> Bool {
        arena.withUnsafeBufferPointer { ar in
            let la = Int(lengths[a]), lb = Int(lengths[b])
            let c = memcmp(ar.baseAddress! + starts[a], ar.baseAddress! + starts[b], min(la, lb))
            return c != 0 ? c < 0 : la < lb
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
