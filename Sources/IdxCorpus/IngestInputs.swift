import Foundation
import IdxBase

extension Ingest {
    /// Checks every input before anything is written: each must be a readable regular file
    /// (a FIFO or a device such as /dev/zero would block or never end), not empty, and at
    /// most `maxBytes`. Returns their total size. Explicit paths may be symbolic links to
    /// such a file (the nightly inbox refuses links before it gets here).
    static func checkInputs(_ paths: [String], maxBytes: Int?) throws -> Int {
        var total = 0
        for path in paths {
            let shown = IdxError.printable(path, limit: 200)
            var st = stat()
            guard stat(path, &st) == 0 else {
                throw IdxError("\(shown): no such CSV file (\(String(cString: strerror(errno)))); check the path.")
            }
            let kind = FileKind(mode: st.st_mode)
            guard kind == .regular else {
                let what = kind == .directory ? "a folder; give the CSV files in it" : "\(FileKind.describe(path)), not a regular file; idx ingest reads CSV files only"
                throw IdxError("\(shown): is \(what).")
            }
            let size = Int(st.st_size)
            if size == 0 { throw IdxError("\(shown): the file is empty (0 bytes); a CSV with a header and a description column is needed.") }
            if let maxBytes, size > maxBytes {
                throw IdxError("\(shown): \(size) bytes is more than the limit of \(maxBytes) bytes ([inbox] max_file_bytes); split the file or raise the limit.")
            }
            let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
            if fd < 0 { throw IdxError("\(shown): cannot be read (\(String(cString: strerror(errno)))); check its permissions.") }
            close(fd)
            total += size
        }
        return total
    }
}

extension Ingest {
    /// Reads `path` as `run` would, writing nothing, and returns how many documents it would
    /// keep; throws naming the file when ingesting it would fail (not a regular file, empty,
    /// over `maxBytes`, not CSV, no description column, no document surviving the cleaning).
    /// The nightly job checks each new inbox file with it, so that one bad file is quarantined
    /// instead of failing the whole batch.
    public static func precheck(_ path: String, maxBytes: Int?) throws -> Int {
        _ = try checkInputs([path], maxBytes: maxBytes)
        var cols: Columns?
        var rows = 0, kept = 0, short = 0, malformed = 0
        var clean = [UInt8](repeating: 0, count: 1 << 16)
        try CSVReader(path: path).read(onBytes: { _ in }, onRow: { row in
            guard let c = cols else { cols = try columns(row, file: path); return }
            rows += 1
            guard row.fieldCount == c.count else { malformed += 1; return }
            let d = row.field(c.description)
            if clean.count < d.count { clean = [UInt8](repeating: 0, count: d.count) }
            let n = clean.withUnsafeMutableBufferPointer { Cleaning.cleanBytes(d.baseAddress!, d.count, into: $0.baseAddress!).length }
            if n > Cleaning.minimumLength { kept += 1 } else { short += 1 }
        }, onUnterminated: { _ in malformed += 1 })
        if cols == nil { throw IdxError("\(IdxError.printable(path, limit: 200)): no header row; the file has no CSV content.") }
        if kept == 0 {
            throw IdxError("\(IdxError.printable(path, limit: 200)): no document survives the cleaning (\(rows) rows, \(short) too short, \(malformed) malformed).")
        }
        return kept
    }
}
