/// Ascending sorts of 64-bit keys (TopK's rank keys, document indices) by least-significant-digit
/// radix, a byte a pass, skipping the bytes every key shares: a top-k's keys share most of their
/// score's bits and the high bytes of their index, so 1,000 keys take four or five passes. A
/// comparison sort of random keys branches on coin tosses the predictor misses half the time.
public enum RadixSort {
    /// Below this many keys the standard sort is as fast.
    static let smallest = 128

    public static func sort(_ keys: inout [UInt64]) {
        guard keys.count > smallest else { keys.sort(); return }
        var any: UInt64 = 0, all = UInt64.max
        for x in keys { any |= x; all &= x }
        let differing = any ^ all
        let n = keys.count
        var other = [UInt64](repeating: 0, count: n)
        var inOther = false
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 256) { start in
            keys.withUnsafeMutableBufferPointer { a in other.withUnsafeMutableBufferPointer { b in
                var src = a.baseAddress!, dst = b.baseAddress!
                for shift in stride(from: UInt64(0), to: 64, by: 8) where (differing >> shift) & 0xFF != 0 {
                    start.update(repeating: 0)
                    for i in 0 ..< n { start[Int((src[i] >> shift) & 0xFF)] &+= 1 }
                    var sum = 0
                    for byte in 0 ..< 256 { let c = start[byte]; start[byte] = sum; sum &+= c }
                    for i in 0 ..< n {
                        let key = src[i], byte = Int((key >> shift) & 0xFF)
                        dst[start[byte]] = key
                        start[byte] &+= 1
                    }
                    swap(&src, &dst)
                    inOther.toggle()
                }
            } }
        }
        if inOther { keys = other }
    }

    /// Non-negative integers, ascending.
    public static func sorted(_ values: [Int]) -> [Int] {
        guard values.count > smallest else { return values.sorted() }
        precondition(values.allSatisfy { $0 >= 0 }, "RadixSort.sorted takes non-negative integers")
        var keys = values.map { UInt64(UInt(bitPattern: $0)) }
        sort(&keys)
        return keys.map { Int(bitPattern: UInt($0)) }
    }
}
