import Foundation
import IdxBase
import IdxCorpus

/// The lexical half of a segment (`segments/seg-*.idxlex`, beside the `.idxseg` of the
/// same rows): an inverted index of `LexicalAnalyzer` terms with term frequencies and
/// document lengths, enough for BM25 with statistics summed over all live segments.
/// Stored raw and memory-mapped, so a query touches only its own terms' postings.
///
/// Layout (little-endian):
///   0   magic "IDXLEX\0\0"
///   8   u32 version, u32 documents, u32 terms, u32 0
///   24  u64 total length (Σ document lengths in terms), u64 term-bytes length, u64 postings length
///   48  u32 × documents        document lengths
///       u32 × (terms + 1)      offsets into the term bytes (terms sorted bytewise)
///       u32 × terms            document frequency of each term
///       u64 × (terms + 1)      offsets into the postings
///       term bytes, then postings: per term, (row gap, tf) pairs as LEB128 varints
///   end u64 XXH64 of every byte before it
public enum LexicalFormat {
    public static let magic: [UInt8] = Array("IDXLEX\0\0".utf8)
    public static let version: UInt32 = 1
    static let headerBytes = 48
}

/// Collects the documents of one segment, then encodes them.
public struct LexicalSegmentBuilder {
    private var ids: [String: Int32] = [:]
    private var names: [[UInt8]] = []
    private var postingRows: [[UInt32]] = []
    private var postingTFs: [[UInt32]] = []
    private(set) var lengths: [UInt32] = []
    private var scratch: [Int32] = []

    var documentCount: Int { lengths.count }

    mutating func add(cleanedText: String) {
        let row = UInt32(lengths.count)
        scratch.removeAll(keepingCapacity: true)
        var text = cleanedText
        text.withUTF8 { b in
            guard let p = b.baseAddress else { return }
            LexicalAnalyzer.forEachTerm(p, b.count) { t in
                let key = String(decoding: t, as: UTF8.self)
                if let id = ids[key] { scratch.append(id); return }
                let id = Int32(names.count)
                ids[key] = id
                names.append(Array(t)); postingRows.append([]); postingTFs.append([])
                scratch.append(id)
            }
        }
        lengths.append(UInt32(scratch.count))
        scratch.sort()
        var i = 0
        while i < scratch.count {
            var j = i + 1
            while j < scratch.count && scratch[j] == scratch[i] { j += 1 }
            let t = Int(scratch[i])
            postingRows[t].append(row); postingTFs[t].append(UInt32(j - i))
            i = j
        }
    }

    func encode() -> [UInt8] {
        let order = names.indices.sorted { names[$0].lexicographicallyPrecedes(names[$1]) }
        var termBytes: [UInt8] = [], termOffsets: [UInt32] = [0], dfs: [UInt32] = []
        var postings: [UInt8] = [], postingOffsets: [UInt64] = [0]
        for t in order {
            termBytes += names[t]; termOffsets.append(UInt32(termBytes.count))
            dfs.append(UInt32(postingRows[t].count))
            var previous: UInt32 = 0
            for (r, tf) in zip(postingRows[t], postingTFs[t]) {
                appendVarint(&postings, UInt64(r - previous)); appendVarint(&postings, UInt64(tf))
                previous = r
            }
            postingOffsets.append(UInt64(postings.count))
        }
        var w = ByteWriter()
        w.raw(LexicalFormat.magic)
        w.u32(LexicalFormat.version); w.u32(UInt32(lengths.count)); w.u32(UInt32(order.count)); w.u32(0)
        w.u64(lengths.reduce(0) { $0 + UInt64($1) }); w.u64(UInt64(termBytes.count)); w.u64(UInt64(postings.count))
        for l in lengths { w.u32(l) }
        for o in termOffsets { w.u32(o) }
        for d in dfs { w.u32(d) }
        for o in postingOffsets { w.u64(o) }
        w.raw(termBytes); w.raw(postings)
        w.u64(XXHash64.hash(w.bytes))
        return w.bytes
    }
}

@inline(__always) func appendVarint(_ out: inout [UInt8], _ v: UInt64) {
    var v = v
    while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
    out.append(UInt8(v))
}

/// A memory-mapped `.idxlex` file: its checksum and tables verified when opened, each term's
/// postings when opened (`.atOpen`) or when a query first reads the term (`.onFirstRead`:
/// `postingsChecked`; at a million documents, checking all of them took a third of a one-off
/// search).
public final class LexicalSegmentReader: @unchecked Sendable {  // `unchecked` only under `lock`
    let path: String
    public let documentCount: Int
    public let termCount: Int
    let totalLength: Int
    private let file: MappedFile
    private let lengths: UnsafeRawPointer, termOffsets: UnsafeRawPointer, dfs: UnsafeRawPointer
    private let postingOffsets: UnsafeRawPointer, termBytes: UnsafePointer<UInt8>, postings: UnsafePointer<UInt8>
    private let postingsLength: Int
    /// Whether terms' postings are checked on first read (else all were, at open).
    private let checksOnFirstRead: Bool
    /// With `checksOnFirstRead`, the terms not checked yet; read and written under `lock`.
    private var unchecked: [Bool] = []
    private let lock = NSLock()

    public convenience init(path: String, verification: Verification = .atOpen) throws {
        try self.init(file: MappedFile(path: path), verification: verification)
    }

    /// A segment built in memory (LexicalSegmentBuilder.encode), never written; `source`
    /// names it in errors.
    public convenience init(bytes: [UInt8], source: String) throws {
        try self.init(file: MappedFile(copying: bytes, path: source), verification: .atOpen)
    }

    init(file: MappedFile, verification: Verification) throws {
        let path = file.path
        self.path = path
        self.file = file
        let b = file.bytes
        func damaged(_ why: String) -> IdxError { Self.damaged(path, why) }
        guard b.count >= LexicalFormat.headerBytes + 8, Array(b[0 ..< 8]) == LexicalFormat.magic else {
            throw damaged("not an idx lexical segment (bad magic or too short)")
        }
        var r = ByteReader(b, at: 8, source: path)
        let version = try r.u32()
        if version > LexicalFormat.version {
            throw IdxError("\(path): lexical segment version \(version) is newer than this idx understands (\(LexicalFormat.version)); upgrade idx.")
        }
        documentCount = Int(try r.u32()); termCount = Int(try r.u32()); _ = try r.u32()
        // Sizes bounded by the file before any product or sum of them (a lie must not overflow).
        guard documentCount <= b.count / 4, termCount <= b.count / 16 else {
            throw damaged("\(documentCount) documents and \(termCount) terms do not fit in \(b.count) bytes")
        }
        totalLength = try r.size(atMost: Int(UInt32.max) * documentCount, "total length")
        let termBytesLength = try r.size(atMost: b.count, "term bytes length"); postingsLength = try r.size(atMost: b.count, "postings length")
        let expected = LexicalFormat.headerBytes + 4 * documentCount + 4 * (termCount + 1) + 4 * termCount
            + 8 * (termCount + 1) + termBytesLength + postingsLength + 8
        guard expected == b.count else { throw damaged("size \(b.count) bytes, its header implies \(expected)") }
        let stored = b.loadUnaligned(fromByteOffset: b.count - 8, as: UInt64.self)
        let actual = XXHash64.hash(UnsafeRawBufferPointer(rebasing: b[0 ..< b.count - 8]))
        guard UInt64(littleEndian: stored) == actual else {
            throw damaged("checksum mismatch (XXH64 \(XXHash64.hex(actual)), stored \(XXHash64.hex(UInt64(littleEndian: stored))))")
        }
        let base = b.baseAddress!
        var at = LexicalFormat.headerBytes
        lengths = base + at; at += 4 * documentCount
        termOffsets = base + at; at += 4 * (termCount + 1)
        dfs = base + at; at += 4 * termCount
        postingOffsets = base + at; at += 8 * (termCount + 1)
        termBytes = (base + at).assumingMemoryBound(to: UInt8.self); at += termBytesLength
        postings = (base + at).assumingMemoryBound(to: UInt8.self)
        checksOnFirstRead = verification == .onFirstRead
        try validateTables(termBytesLength: termBytesLength)
        if checksOnFirstRead {
            unchecked = [Bool](repeating: true, count: termCount)
        } else {
            for t in 0 ..< termCount { try validatePostings(t) }
        }
    }

    private static func damaged(_ path: String, _ why: String) -> IdxError {
        IdxError("\(path): \(why); the lexical index is damaged: rebuild the index with idx index.")
    }
    private func damaged(_ why: String) -> IdxError { Self.damaged(path, why) }

    /// Checks term `t`'s postings (`validatePostings`) unless they already are; a query calls it
    /// for every term it reads, before reading the term's postings.
    public func postingsChecked(_ t: Int) throws {
        guard checksOnFirstRead else { return }
        try lock.withLock {
            guard unchecked[t] else { return }
            try validatePostings(t)
            unchecked[t] = false
        }
    }

    /// Checks every offset and count against the file before any query uses them (a
    /// re-checksummed file may lie): term offsets ascending within the term bytes, terms sorted
    /// and distinct, posting offsets ascending within the postings, document frequencies within
    /// the document count, and the document lengths summing to the total length.
    private func validateTables(termBytesLength: Int) throws {
        var sum = 0
        for d in 0 ..< documentCount { sum += length(d) }
        guard sum == totalLength else { throw damaged("document lengths sum to \(sum), the header says \(totalLength)") }
        guard termOffset(0) == 0, postingOffset(0) == 0 else { throw damaged("the first term or posting offset is not 0") }
        guard termOffset(termCount) == termBytesLength, postingOffset(termCount) == postingsLength else {
            throw damaged("the last term or posting offset does not end its table")
        }
        var previousTerm: UnsafeBufferPointer<UInt8>?
        for t in 0 ..< termCount {
            let s = termOffset(t), e = termOffset(t + 1)
            guard s <= e, e <= termBytesLength else { throw damaged("term \(t) has offsets \(s)..\(e) outside the term bytes") }
            let term = UnsafeBufferPointer(start: termBytes + s, count: e - s)
            if let p = previousTerm, !p.lexicographicallyPrecedes(term) { throw damaged("term \(t) is not after term \(t - 1) in byte order") }
            previousTerm = term
            let ps = postingOffset(t), pe = postingOffset(t + 1)
            guard ps <= pe, pe <= postingsLength else { throw damaged("term \(t) has posting offsets \(ps)..\(pe) outside the postings") }
            let df = documentFrequency(t)
            guard df >= 1, df <= documentCount else { throw damaged("term \(t) has document frequency \(df) of \(documentCount) documents") }
        }
    }

    /// Checks term `t`'s list (its offsets already checked): exactly `df` (row, tf) pairs, rows
    /// ascending below the document count, tf ≥ 1, every varint inside the list.
    private func validatePostings(_ t: Int) throws {
        let pe = postingOffset(t + 1)
        var at = postingOffset(t), row = -1, pairs = 0
        func varint() throws -> Int {
            var v = 0, shift = 0
            while true {
                guard at < pe, shift <= 28 else { throw damaged("term \(t) has a posting that runs past its list") }
                let byte = postings[at]; at += 1
                v |= Int(byte & 0x7F) << shift
                if byte < 0x80 { return v }
                shift += 7
            }
        }
        while at < pe {
            let gap = try varint(), tf = try varint()
            row = row < 0 ? gap : row + gap
            guard (pairs == 0 || gap > 0), row < documentCount, tf >= 1 else {
                throw damaged("term \(t) has a posting for row \(row) (tf \(tf)) outside 0..<\(documentCount) or out of order")
            }
            pairs += 1
        }
        guard pairs == documentFrequency(t) else { throw damaged("term \(t) lists \(pairs) postings, its document frequency is \(documentFrequency(t))") }
    }

    @inline(__always) func length(_ row: Int) -> Int { Int(UInt32(littleEndian: lengths.loadUnaligned(fromByteOffset: 4 * row, as: UInt32.self))) }
    @inline(__always) private func termOffset(_ t: Int) -> Int { Int(UInt32(littleEndian: termOffsets.loadUnaligned(fromByteOffset: 4 * t, as: UInt32.self))) }
    @inline(__always) private func postingOffset(_ t: Int) -> Int { Int(clamping: UInt64(littleEndian: postingOffsets.loadUnaligned(fromByteOffset: 8 * t, as: UInt64.self))) }
    @inline(__always) func documentFrequency(_ t: Int) -> Int { Int(UInt32(littleEndian: dfs.loadUnaligned(fromByteOffset: 4 * t, as: UInt32.self))) }

    /// The term's index, by binary search over the sorted term table.
    func find(_ term: [UInt8]) -> Int? {
        var lo = 0, hi = termCount
        while lo < hi {
            let mid = (lo + hi) / 2
            let s = termOffset(mid), e = termOffset(mid + 1)
            let cmp = compare(UnsafeBufferPointer(start: termBytes + s, count: e - s), term)
            if cmp == 0 { return mid }
            if cmp < 0 { lo = mid + 1 } else { hi = mid }
        }
        return nil
    }

    private func compare(_ a: UnsafeBufferPointer<UInt8>, _ b: [UInt8]) -> Int {
        let n = min(a.count, b.count)
        for i in 0 ..< n where a[i] != b[i] { return a[i] < b[i] ? -1 : 1 }
        return a.count == b.count ? 0 : (a.count < b.count ? -1 : 1)
    }

    /// Calls `body(row, tf)` for every document holding term `t`, rows ascending.
    /// A posting list that runs past its end (impossible past the checksum) stops early.
    @inline(__always) func forEachPosting(_ t: Int, _ body: (Int, Int) -> Void) {
        var at = postingOffset(t)
        let end = min(postingOffset(t + 1), postingsLength)
        var row = 0
        @inline(__always) func varint() -> Int {
            var v = 0, shift = 0
            while at < end {
                let byte = postings[at]; at += 1
                v |= Int(byte & 0x7F) << shift
                if byte < 0x80 { break }
                shift += 7
            }
            return v
        }
        while at < end {
            row += varint()
            body(row, varint())
        }
    }
}

extension LexicalSegmentBuilder {
    /// The lexical segment of these documents (title and cleaned description), encoded.
    public static func encode(_ metadata: [DocumentMetadata]) -> [UInt8] { encode(metadata.map(LexicalAnalyzer.documentText)) }

    public static func encode(_ cleanedTexts: [String]) -> [UInt8] {
        var b = LexicalSegmentBuilder()
        for t in cleanedTexts { b.add(cleanedText: t) }
        return b.encode()
    }
}
