/// A bounded heap of the best `capacity` (score, index) pairs, best meaning a higher score,
/// then a lower index: the kept set does not depend on the order of the pushes.
///
/// Each pair is one UInt64 rank key (`rankKey`) whose ascending order is that ranking, so the
/// heap compares integers and `ranked()` sorts integers: a search keeps up to 1,000 pairs a
/// side twice a query, and comparing (Float, Int) tuples through closures cost more than the scan.
struct TopK {
    /// A max-heap of rank keys: the root is the worst pair kept.
    private var keys: [UInt64] = []
    let capacity: Int
    /// The score a newcomer must beat (a newcomer that only ties it comes later in index order).
    private(set) var threshold: Float = -.infinity

    init(capacity: Int) {
        self.capacity = capacity
        keys.reserveCapacity(capacity)
    }

    var count: Int { keys.count }
    /// The kept scores and indices, in heap order.
    var scores: [Float] { keys.map(Self.score) }
    var ids: [Int] { keys.map(Self.index) }

    /// The kept indices, best first (ties: lower index first).
    func ranked() -> [Int] { keys.sorted().map(Self.index) }

    /// The kept (index, score) pairs, best first.
    func rankedPairs() -> [(index: Int, score: Float)] { keys.sorted().map { (Self.index($0), Self.score($0)) } }

    /// (score descending, index ascending) as one ascending integer: the score's bits mapped
    /// to an order-preserving unsigned integer, inverted, above a 32-bit index.
    static func rankKey(_ score: Float, _ index: Int) -> UInt64 {
        precondition(index >= 0 && index <= Int(UInt32.max), "TopK holds indices below 2^32")
        let bits = (score == 0 ? 0 : score).bitPattern          // -0 ranks as 0
        let ascending = bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
        return UInt64(~ascending) << 32 | UInt64(index)
    }
    static func index(_ key: UInt64) -> Int { Int(key & 0xFFFF_FFFF) }
    static func score(_ key: UInt64) -> Float {
        let ascending = ~UInt32(key >> 32)
        return Float(bitPattern: ascending & 0x8000_0000 != 0 ? ascending & 0x7FFF_FFFF : ~ascending)
    }

    mutating func push(_ score: Float, _ index: Int) {
        let key = Self.rankKey(score, index)
        let n = keys.count
        if n < capacity {
            keys.append(key)
            keys.withUnsafeMutableBufferPointer { h in
                var i = n
                while i > 0 {
                    let p = (i - 1) / 2
                    if h[p] >= h[i] { break }
                    h.swapAt(p, i); i = p
                }
            }
            if n + 1 == capacity { threshold = Self.score(keys[0]) }
        } else if capacity > 0, key < keys[0] {
            keys.withUnsafeMutableBufferPointer { h in
                h[0] = key
                var i = 0
                while true {
                    let l = 2 * i + 1, r = l + 1
                    var m = i
                    if l < n && h[l] > h[m] { m = l }
                    if r < n && h[r] > h[m] { m = r }
                    if m == i { break }
                    h.swapAt(m, i); i = m
                }
            }
            threshold = Self.score(keys[0])
        }
    }
}
