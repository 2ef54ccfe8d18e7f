/// A bounded min-heap of the best `capacity` (score, index) pairs: the one top-k of the search
/// scan, of eval's kNN and of contrastive training's BM25 neighbours.
/// `@inlinable`: `push` runs once a candidate row in those scans, in other modules.
public struct TopK {
    /// The kept scores and indices, in heap order (not sorted).
    public var scores: [Float] { heapScores }
    public var ids: [Int] { heapIDs }
    public let capacity: Int
    @usableFromInline var heapScores: [Float] = []
    @usableFromInline var heapIDs: [Int] = []
    @inlinable public init(capacity: Int) {
        self.capacity = capacity
        heapScores.reserveCapacity(capacity); heapIDs.reserveCapacity(capacity)
    }
    /// The score a newcomer must beat.
    @inlinable public var threshold: Float { heapScores.count < capacity ? -.infinity : heapScores[0] }

    /// The kept indices, best first (ties: lower index first).
    public func ranked() -> [Int] {
        zip(scores, ids).sorted { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 < $1.1 }.map(\.1)
    }

    @inlinable public mutating func push(_ score: Float, _ id: Int) {
        if heapScores.count < capacity {
            heapScores.append(score); heapIDs.append(id)
            var i = heapScores.count - 1
            while i > 0 {
                let p = (i - 1) / 2
                if heapScores[p] <= heapScores[i] { break }
                heapScores.swapAt(p, i); heapIDs.swapAt(p, i); i = p
            }
        } else if score > heapScores[0] {
            heapScores[0] = score; heapIDs[0] = id
            var i = 0
            let n = heapScores.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n && heapScores[l] < heapScores[m] { m = l }
                if r < n && heapScores[r] < heapScores[m] { m = r }
                if m == i { break }
                heapScores.swapAt(m, i); heapIDs.swapAt(m, i); i = m
            }
        }
    }
}
