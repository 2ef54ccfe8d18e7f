import CCsv
import Foundation
import IdxBase

/// One CSV row, valid only during the callback: fields are byte ranges of a flat buffer.
struct CSVRow {
    let bytes: UnsafePointer<UInt8>
    let ends: UnsafeBufferPointer<Int>   // field i is bytes[ends[i-1] ..< ends[i]] (ends[-1] = start)
    let start: Int
    /// 1-based line of the file on which the row starts.
    let line: Int

    var fieldCount: Int { ends.count }

    @inline(__always)
    func field(_ i: Int) -> UnsafeBufferPointer<UInt8> {
        let s = i == 0 ? start : ends[i - 1]
        return UnsafeBufferPointer(start: bytes + s, count: ends[i] - s)
    }
}

/// The libcsv callbacks' state: fields of the row being parsed, and finished rows.
private final class CSVState {
    var bytes: [UInt8] = []            // fields of finished rows, then of the current row
    var ends: [Int] = []               // end offsets of fields, all rows
    var rowFieldStart: [Int] = []      // index into `ends` where each finished row starts
    var rowByteStart: [Int] = []
    var rowLines: [Int] = []
    var currentFieldStart = 0          // index into `ends` of the current row's first field
    var currentByteStart = 0
    var currentLine = 1                // line on which the current row started

    init() { bytes.reserveCapacity(1 << 16); ends.reserveCapacity(64) }
}

private let fieldCallback: @convention(c) (UnsafeMutableRawPointer?, Int, UnsafeMutableRawPointer?) -> Void = { data, len, ctx in
    let s = Unmanaged<CSVState>.fromOpaque(ctx!).takeUnretainedValue()
    if len > 0, let data { s.bytes.append(contentsOf: UnsafeRawBufferPointer(start: data, count: len)) }
    s.ends.append(s.bytes.count)
}

private let rowCallback: @convention(c) (Int32, UnsafeMutableRawPointer?) -> Void = { _, ctx in
    let s = Unmanaged<CSVState>.fromOpaque(ctx!).takeUnretainedValue()
    s.rowFieldStart.append(s.currentFieldStart)
    s.rowByteStart.append(s.currentByteStart)
    s.rowLines.append(s.currentLine)
    s.currentFieldStart = s.ends.count
    s.currentByteStart = s.bytes.count
}

/// libcsv keeps unquoted fields' spaces only when told nothing is a space (Python's csv
/// module keeps them too).
private let noSpaces: @convention(c) (UInt8) -> Int32 = { _ in 0 }

/// Streams a CSV file through libcsv with a fixed-size read buffer: quoted fields,
/// embedded newlines, doubled quotes, CRLF, a UTF-8 BOM. Memory: the read buffer
/// plus the longest row. Rows are reported with the line they start on.
struct CSVReader {
    let path: String
    var chunkSize = 1 << 20
    /// Longest row accepted: an unterminated quote early in a huge file would otherwise make
    /// the rest of the file one field, held in memory.
    var maxRowBytes = 64 << 20
    /// Most fields in a row (the header included): a line of 100 MB of commas holds
    /// 100 million empty fields, whose offsets and names would take gigabytes.
    var maxFields = 1 << 16

    /// Why the last row could not be read (an unterminated quote at the end of the file).
    struct Unterminated: Error { let line: Int }

    /// Reads the file, calling `onRow` for every row (header included) and `onBytes` with
    /// every raw chunk (for hashing and progress). Throws IdxError when the file cannot be
    /// read; reports an unterminated final quote through `onUnterminated`.
    func read(onBytes: (UnsafeRawBufferPointer) -> Void,
              onRow: (CSVRow) throws -> Void,
              onUnterminated: (Int) throws -> Void) throws {
        let fd = open(path, O_RDONLY)
        if fd < 0 {
            throw IdxError("\(path): cannot open the file: \(String(cString: strerror(errno))). Check the path and its permissions.")
        }
        defer { close(fd) }
        var parser = csv_parser()
        guard csv_init(&parser, 0) == 0 else { throw IdxError("libcsv could not start (out of memory).") }
        defer { csv_free(&parser) }
        csv_set_space_func(&parser, noSpaces)
        let state = CSVState()
        let ctx = Unmanaged.passUnretained(state).toOpaque()
        var buffer = [UInt8](repeating: 0, count: max(chunkSize, 4))  // the BOM fits in the first read
        var line = 1
        var first = true

        func drain() throws {
            let rows = state.rowLines.count
            if rows == 0 { return }
            try state.bytes.withUnsafeBufferPointer { b in
                try state.ends.withUnsafeBufferPointer { e in
                    for r in 0 ..< rows {
                        let f0 = state.rowFieldStart[r]
                        let f1 = r + 1 < rows ? state.rowFieldStart[r + 1] : state.currentFieldStart
                        // A row that began and ended within one read is checked here.
                        let b1 = r + 1 < rows ? state.rowByteStart[r + 1] : state.currentByteStart
                        if f1 - f0 > maxFields {
                            throw IdxError("\(path):\(state.rowLines[r]): the row starting here has \(f1 - f0) fields, more than \(maxFields); this is not an IMDB-Genres CSV (a header has 5 columns). Give a CSV with one row per film.")
                        }
                        if b1 - state.rowByteStart[r] > maxRowBytes {
                            throw IdxError("\(path):\(state.rowLines[r]): the row starting here is longer than \(maxRowBytes >> 20) MiB; an unterminated quote? Fix the file (close the quote) and run again.")
                        }
                        let row = CSVRow(bytes: b.baseAddress ?? UnsafePointer(bitPattern: 1)!,
                                         ends: UnsafeBufferPointer(rebasing: e[f0 ..< f1]),
                                         start: state.rowByteStart[r], line: state.rowLines[r])
                        try onRow(row)
                    }
                }
            }
            // Keep only the current (unfinished) row's fields, moved to the front.
            let keepBytes = state.bytes.count - state.currentByteStart
            if keepBytes > 0 {
                state.bytes.withUnsafeMutableBufferPointer { b in
                    b.baseAddress!.update(from: b.baseAddress! + state.currentByteStart, count: keepBytes)
                }
            }
            state.bytes.removeSubrange(keepBytes...)
            let keepEnds = state.ends[state.currentFieldStart...].map { $0 - state.currentByteStart }
            state.ends.removeAll(keepingCapacity: true)
            state.ends.append(contentsOf: keepEnds)
            state.currentFieldStart = 0
            state.currentByteStart = 0
            state.rowFieldStart.removeAll(keepingCapacity: true)
            state.rowByteStart.removeAll(keepingCapacity: true)
            state.rowLines.removeAll(keepingCapacity: true)
        }

        while true {
            let got = buffer.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress!, $0.count) }
            if got < 0 {
                throw IdxError("\(path): read error: \(String(cString: strerror(errno))).")
            }
            if got == 0 { break }
            try buffer.withUnsafeBytes { raw in
                let chunk = UnsafeRawBufferPointer(rebasing: raw[0 ..< got])
                onBytes(chunk)
                let base = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
                var i = 0
                if first {
                    first = false
                    if got >= 3 && base[0] == 0xEF && base[1] == 0xBB && base[2] == 0xBF { i = 3 }
                }
                // Feed libcsv one line at a time so each row knows the line it starts on.
                while i < got {
                    let rest = got - i
                    let nl = memchr(base + i, 0x0A, rest)
                    let end = nl.map { UnsafePointer($0.assumingMemoryBound(to: UInt8.self)) - base + 1 } ?? got
                    if parser.pstate == 0 { state.currentLine = line }  // ROW_NOT_BEGUN
                    let n = end - i
                    if csv_parse(&parser, base + i, n, fieldCallback, rowCallback, ctx) != n {
                        throw IdxError("\(path):\(line): CSV parse error: \(String(cString: csv_strerror(csv_error(&parser)))).")
                    }
                    if nl != nil { line += 1 }
                    i = end
                    if parser.entry_pos + state.bytes.count - state.currentByteStart > maxRowBytes {
                        throw IdxError("\(path):\(state.currentLine): the row starting here is longer than \(maxRowBytes >> 20) MiB at line \(line); an unterminated quote? Fix the file (close the quote) and run again.")
                    }
                    if state.ends.count - state.currentFieldStart > maxFields {
                        throw IdxError("\(path):\(state.currentLine): the row starting here has more than \(maxFields) fields; this is not an IMDB-Genres CSV (a header has 5 columns). Give a CSV with one row per film.")
                    }
                }
            }
            try drain()
        }
        if parser.pstate == 0 { state.currentLine = line }
        // FIELD_BEGUN (2) inside quotes at the end: the quote never closes. libcsv would
        // submit the rest of the file as the field; give the row up instead.
        if parser.pstate == 2 && parser.quoted != 0 {
            _ = csv_fini(&parser, nil, nil, nil)
            try drain()
            try onUnterminated(state.currentLine)
            return
        }
        _ = csv_fini(&parser, fieldCallback, rowCallback, ctx)
        try drain()
    }
}
