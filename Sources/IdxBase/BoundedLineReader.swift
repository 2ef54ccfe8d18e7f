import Foundation

/// Lines of a file descriptor, each at most `maxLineBytes` long: `readLine()` keeps reading a
/// line that never ends (`/dev/zero`) until memory runs out; this refuses it instead.
public final class BoundedLineReader {
    public static let defaultMaxLineBytes = 1 << 20
    /// Standard input, lines of at most 1 MiB (one reader for all of it: it buffers ahead).
    public static func standardInput() -> BoundedLineReader { BoundedLineReader(fd: 0, name: "standard input") }

    let fd: Int32
    let name: String
    let maxLineBytes: Int
    private var buffer: [UInt8] = []
    private var start = 0
    private var finished = false
    private var lineNumber = 0

    public init(fd: Int32, name: String, maxLineBytes: Int = BoundedLineReader.defaultMaxLineBytes) {
        self.fd = fd; self.name = name; self.maxLineBytes = maxLineBytes
    }

    /// The next line without its "\n" (a final "\r" dropped too); nil at the end.
    public func next() throws -> String? {
        var scanned = start
        while true {
            if let nl = buffer[scanned...].firstIndex(of: 0x0A) {
                var end = nl
                if end > start && buffer[end - 1] == 0x0D { end -= 1 }
                let line = String(decoding: buffer[start ..< end], as: UTF8.self)
                start = nl + 1
                lineNumber += 1
                return line
            }
            scanned = buffer.count
            if buffer.count - start > maxLineBytes {
                throw IdxError("\(name), line \(lineNumber + 1): longer than \(maxLineBytes) bytes with no newline; give one query per line.")
            }
            if finished {
                guard start < buffer.count else { return nil }
                let line = String(decoding: buffer[start...], as: UTF8.self)
                start = buffer.count
                lineNumber += 1
                return line
            }
            if start > 0 && start >= buffer.count / 2 {
                buffer.removeFirst(start)
                scanned -= start
                start = 0
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw IdxError("\(name): read failed (\(String(cString: strerror(errno)))).")
            }
            if n == 0 { finished = true } else { buffer += chunk[0 ..< n] }
        }
    }
}
