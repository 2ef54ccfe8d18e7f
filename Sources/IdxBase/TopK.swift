/// The best `capacity` (score, index) pairs of those pushed, best meaning a higher score, then a
/// lower index: the kept set does not depend on the order of the pushes.
///
/// Each pair is one UInt64 rank key (`rankKey`) whose ascending order is that ranking, and the
/// keys gather unsorted in a buffer of twice the capacity; when it fills, a radix select keeps
/// the best half and raises `threshold` (FAISS's reservoir). A search keeps 1,000 pairs a side
/// twice a query: a heap's sift on every newcomer cost more than the scan itself.
/// The one top-k of the search scan, reciprocal-rank fusion and contrastive training's BM25
/// neighbours; `@inlinable` where a scan calls it once a row, from other modules.
public struct TopK {
    /// Unsorted rank keys: every pair that can still be among the best `capacity`.
    @usableFromInline var keys: [UInt64] = []
    public let capacity: Int
    /// Keys from here on can no longer be kept (the worst kept at the last compaction).
    @usableFromInline var cut = UInt64.max
    /// `compact`'s work space, kept between compactions.
    @usableFromInline var scratch: [UInt64] = [], counts: [Int32] = []
    /// The score a newcomer must reach to be kept (callers test `>` when they push in index order).
    public internal(set) var threshold: Float = -.infinity

    public init(capacity: Int) {
        self.capacity = max(0, capacity)
        keys.reserveCapacity(2 * self.capacity)
    }

    public var count: Int { min(keys.count, capacity) }
    /// The kept scores and indices, best first.
    public var scores: [Float] { best().map(Self.score) }
    public var ids: [Int] { best().map(Self.index) }

    /// The kept indices, best first (ties: lower index first).
    public func ranked() -> [Int] { best().map(Self.index) }

    /// The kept (index, score) pairs, best first.
    public func rankedPairs() -> [(index: Int, score: Float)] { best().map { (Self.index($0), Self.score($0)) } }

    private func best() -> [UInt64] {
        var kept = self
        if kept.keys.count > capacity { kept.compact() }
        RadixSort.sort(&kept.keys)
        return kept.keys
    }

    /// The kept indices in no particular order: the same set as `ids`, chosen by a selection
    /// instead of a sort (for a caller that orders them its own way).
    public func keptIndices() -> [Int] {
        var kept = self
        if kept.keys.count > capacity { kept.compact() }
        return kept.keys.map(Self.index)
    }

    /// (score descending, index ascending) as one ascending integer: the score's bits mapped
    /// to an order-preserving unsigned integer, inverted, above a 32-bit index.
    @inlinable public static func rankKey(_ score: Float, _ index: Int) -> UInt64 {
        precondition(index >= 0 && index <= Int(UInt32.max), "TopK holds indices below 2^32")
        let bits = (score == 0 ? 0 : score).bitPattern          // -0 ranks as 0
        let ascending = bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
        return UInt64(~ascending) << 32 | UInt64(index)
    }
    @inlinable public static func index(_ key: UInt64) -> Int { Int(key & 0xFFFF_FFFF) }
    @inlinable public static func score(_ key: UInt64) -> Float {
        let ascending = ~UInt32(key >> 32)
        return Float(bitPattern: ascending & 0x8000_0000 != 0 ? ascending & 0x7FFF_FFFF : ~ascending)
    }

    @inlinable public mutating func push(_ score: Float, _ index: Int) { push(key: Self.rankKey(score, index)) }

    @inlinable mutating func push(key: UInt64) {
        guard key < cut, capacity > 0 else { return }
        keys.append(key)
        if keys.count == 2 * capacity { compact() }
    }

    /// Pushes every pair `other` holds: the best `capacity` of both (a parallel scan's per-worker
    /// lists merged into the one the whole index would give).
    public mutating func merge(_ other: TopK) {
        for key in other.keys { push(key: key) }
    }

    /// Keeps the best `capacity` keys and moves the cut to the worst of them. A radix select:
    /// each round counts the keys still undecided into 2,048 buckets of the bits where they
    /// differ, keeps the buckets wholly inside the best `capacity`, drops those outside, and goes
    /// on with the one bucket the cut falls in (a quickselect branches on every comparison, and
    /// on random scores the predictor misses half of them).
    @usableFromInline mutating func compact() {
        let k = capacity
        // One slot more than the keys: where a dropped key is written, so the partition never branches.
        if scratch.count <= keys.count { scratch = [UInt64](repeating: 0, count: keys.count + 1) }
        if counts.isEmpty { counts = [Int32](repeating: 0, count: Self.radixBuckets) }
        keys.withUnsafeMutableBufferPointer { a in scratch.withUnsafeMutableBufferPointer { scratch in
            counts.withUnsafeMutableBufferPointer { counts in
            let junk = scratch.count - 1
            // a[..<lo]: kept; a[lo..<hi]: undecided; a[hi...]: dropped.
            var lo = 0, hi = a.count
            while hi - lo > 32, lo < k {
                // The bits some keys set and others do not: the buckets split on their top ones
                // (OR and AND vectorize where a 64-bit min and max do not).
                var any: UInt64 = 0, all = UInt64.max
                for i in lo ..< hi { any |= a[i]; all &= a[i] }
                let differing = any ^ all
                if differing == 0 { break } // one key pushed many times: no bits tell them apart
                let width = 64 - differing.leadingZeroBitCount
                let mask = width == 64 ? UInt64.max : (1 << UInt64(width)) - 1, shift = UInt64(max(0, width - Self.radixBits))
                counts.update(repeating: 0)
                for i in lo ..< hi { counts[Int((a[i] & mask) >> shift)] &+= 1 }
                // The bucket holding the cut: the keys below it fill fewer than k - lo places.
                var bucket = 0, below = 0
                while below + Int(counts[bucket]) < k - lo { below += Int(counts[bucket]); bucket += 1 }
                // Lower buckets to the front, the cut's bucket after them, the rest to the junk
                // slot: the destination and the cursors from masks, not branches (the bucket a
                // random score falls in is a coin toss for a predictor).
                var front = 0, middle = below
                for i in lo ..< hi {
                    let key = a[i], diff = Int((key & mask) >> shift) &- bucket
                    let low = diff >> 63, mid = ~((diff | (0 &- diff)) >> 63)
                    scratch[(front & low) | (middle & mid) | (junk & ~(low | mid))] = key
                    front &+= low & 1; middle &+= mid & 1
                }
                (a.baseAddress! + lo).update(from: scratch.baseAddress!, count: middle)
                hi = lo + middle
                lo += below
            }
            // The last few undecided keys: sorted, the best of them kept.
            if lo < k { a[lo ..< hi].sort() }
        } } }
        keys.removeLast(keys.count - k)
        cut = keys.max()!
        threshold = Self.score(cut)
    }

    @usableFromInline static let radixBits = 11
    @usableFromInline static var radixBuckets: Int { 1 << radixBits }
}
