import Foundation

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
