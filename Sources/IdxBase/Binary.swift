import CZstd
import Foundation

/// Little-endian byte building for the segment format.
public struct ByteWriter {
    public var bytes: [UInt8] = []
    public init() {}

    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    public mutating func f32(_ v: Float) { u32(v.bitPattern) }
    public mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        u32(UInt32(utf8.count))
        bytes.append(contentsOf: utf8)
    }
    public mutating func floats(_ v: [Float]) { for x in v { f32(x) } }
    public mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    public mutating func pad(to alignment: Int) {
        while bytes.count % alignment != 0 { bytes.append(0) }
    }
}

/// Bounds-checked little-endian reading; every overrun is a format error naming `source`.
public struct ByteReader {
    public let base: UnsafeRawBufferPointer
    public var position: Int
    public let source: String

    public init(_ base: UnsafeRawBufferPointer, at position: Int = 0, source: String) {
        self.base = base; self.position = position; self.source = source
    }

    private mutating func need(_ n: Int) throws {
        if n < 0 || position + n > base.count {
            throw IdxError("\(source): truncated or corrupted (a field runs past the end at byte \(position)); rebuild it with idx index.")
        }
    }
    public mutating func u16() throws -> UInt16 {
        try need(2); defer { position += 2 }
        return UInt16(littleEndian: base.loadUnaligned(fromByteOffset: position, as: UInt16.self))
    }
    public mutating func u32() throws -> UInt32 {
        try need(4); defer { position += 4 }
        return UInt32(littleEndian: base.loadUnaligned(fromByteOffset: position, as: UInt32.self))
    }
    public mutating func u64() throws -> UInt64 {
        try need(8); defer { position += 8 }
        return UInt64(littleEndian: base.loadUnaligned(fromByteOffset: position, as: UInt64.self))
    }
    public mutating func i64() throws -> Int64 { Int64(bitPattern: try u64()) }
    /// A u64 size or offset that must be at most `limit` (so that arithmetic on it cannot
    /// overflow): a larger one is a format error, not a trap in `Int(_:)`.
    public mutating func size(atMost limit: Int, _ field: String) throws -> Int {
        let v = try u64()
        guard v <= UInt64(max(0, limit)) else {
            throw IdxError("\(source): \(field) \(v) is larger than the file allows (\(limit)); the file is corrupted: rebuild it with idx index.")
        }
        return Int(v)
    }
    public mutating func f32() throws -> Float { Float(bitPattern: try u32()) }
    public mutating func string() throws -> String {
        let n = Int(try u32())
        try need(n); defer { position += n }
        return String(decoding: UnsafeRawBufferPointer(rebasing: base[position ..< position + n]), as: UTF8.self)
    }
    public mutating func bytes(_ n: Int) throws -> UnsafeRawBufferPointer {
        try need(n); defer { position += n }
        return UnsafeRawBufferPointer(rebasing: base[position ..< position + n])
    }
}

/// A read-only memory map of a whole file, unmapped when released.
public final class MappedFile {
    public let path: String
    public let bytes: UnsafeRawBufferPointer
    private let length: Int

    public init(path: String) throws {
        self.path = path
        // O_NONBLOCK and the regular-file check: a FIFO or device put in an index folder must
        // be an error, not a blocked open or an endless map.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 {
            throw IdxError("\(path): cannot open (\(String(cString: strerror(errno)))); the index is incomplete: rebuild it with idx index.")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw IdxError("\(path): cannot stat (\(String(cString: strerror(errno)))).")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw IdxError("\(path): is \(FileKind(mode: st.st_mode).name), not a file idx wrote; the index is damaged: rebuild it with idx index.")
        }
        length = Int(st.st_size)
        if length == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let p = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            throw IdxError("\(path): cannot map the file (\(String(cString: strerror(errno)))).")
        }
        bytes = UnsafeRawBufferPointer(start: p, count: length)
    }

    /// Bytes built in memory, held like a mapped file (a private anonymous map, read-only once
    /// filled), so that a reader of a file format also reads what was never written; `path`
    /// names them in errors.
    public init(copying contents: [UInt8], path: String) {
        self.path = path
        let n = contents.count
        length = n
        guard n > 0 else { bytes = UnsafeRawBufferPointer(start: nil, count: 0); return }
        let p = mmap(nil, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let p, p != MAP_FAILED else {
            fatalError("cannot map \(n) bytes for \(path): \(String(cString: strerror(errno)))")
        }
        contents.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: n) }
        mprotect(p, n, PROT_READ)
        bytes = UnsafeRawBufferPointer(start: p, count: n)
    }

    deinit {
        if let p = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: p), length) }
    }
}
