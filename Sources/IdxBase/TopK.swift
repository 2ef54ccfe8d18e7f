/// The best `capacity` (score, index) pairs of those pushed, best meaning a higher score, then a
/// lower index: the kept set does not depend on the order of the pushes.
///
/// Each pair is one UInt64 rank key (`rankKey`) whose ascending order is that ranking, and the
/// keys gather unsorted in a buffer of twice the capacity; when it fills, a quickselect keeps
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

    private func best() -> ArraySlice<UInt64> { keys.sorted().prefix(capacity) }

    /// The kept indices in no particular order: the same set as `ids`, chosen by a quickselect
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

    @inlinable public mutating func push(_ score: Float, _ index: Int) {
        let key = Self.rankKey(score, index)
        guard key < cut, capacity > 0 else { return }
        keys.append(key)
        if keys.count == 2 * capacity { compact() }
    }

    /// Keeps the best `capacity` keys (quickselect) and moves the cut to the worst of them.
    @usableFromInline mutating func compact() {
        let k = capacity
        keys.withUnsafeMutableBufferPointer { a in
            var lo = 0, hi = a.count - 1
            while lo < hi {
                // Median of three as the pivot; Hoare's partition.
                let mid = lo + (hi - lo) / 2
                if a[mid] < a[lo] { a.swapAt(mid, lo) }
                if a[hi] < a[lo] { a.swapAt(hi, lo) }
                if a[hi] < a[mid] { a.swapAt(hi, mid) }
                let pivot = a[mid]
                var i = lo, j = hi
                while i <= j {
                    while a[i] < pivot { i += 1 }
                    while a[j] > pivot { j -= 1 }
                    if i <= j { a.swapAt(i, j); i += 1; j -= 1 }
                }
                // a[lo...j] ≤ pivot ≤ a[i...hi]: continue in the side holding position k - 1.
                if k - 1 <= j { hi = j } else if k - 1 >= i { lo = i } else { break }
            }
        }
        keys.removeLast(keys.count - k)
        cut = keys.max()!
        threshold = Self.score(cut)
    }
}
