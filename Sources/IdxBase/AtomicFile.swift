import CSupport
import Foundation

/// Writes that never leave a half-written file or folder behind: everything is
/// written under a temporary name beside the target and renamed into place.
public enum AtomicFile {
    /// A unique temporary sibling of `path` (same folder, so rename is atomic).
    public static func temporarySibling(of path: String) -> String {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        return dir + "/." + url.lastPathComponent + ".tmp-\(getpid())-\(UInt32.random(in: 0 ... .max))"
    }

    /// Writes `data` to `path` atomically, with fsync before the rename. Only a regular file
    /// (or nothing) is replaced: a symbolic link, device, FIFO or folder there is refused.
    public static func write(_ data: Data, to path: String) throws {
        try OutputPath.checkFile(path)
        let tmp = temporarySibling(of: path)
        try createParent(of: path)
        guard FileManager.default.createFile(atPath: tmp, contents: nil) else {
            throw IdxError("\(tmp): cannot create the file; check that its folder is writable.")
        }
        do {
            let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: tmp))
            try fh.write(contentsOf: data)
            try fh.synchronize()
            try fh.close()
            try rename(tmp, to: path)
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw error
        }
    }

    /// fsync(2) of a folder: makes its entries (a rename into it) survive a power failure.
    public static func syncFolder(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw IdxError("\(path): cannot open the folder to sync it: \(String(cString: strerror(errno))).") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw IdxError("\(path): cannot sync the folder: \(String(cString: strerror(errno))).") }
    }

    /// fsync(2) of a file already written.
    public static func syncFile(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw IdxError("\(path): cannot open the file to sync it: \(String(cString: strerror(errno))).") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw IdxError("\(path): cannot sync the file: \(String(cString: strerror(errno))).") }
    }

    /// `rename(2)`: atomic replacement of a file (or an empty folder).
    public static func rename(_ from: String, to: String) throws {
        if Foundation.rename(from, to) != 0 {
            throw IdxError("cannot rename \(from) to \(to): \(String(cString: strerror(errno))).")
        }
    }

    /// Publishes the finished folder `staged` at `path`. If `path` exists, the two
    /// are exchanged atomically (renameat2) and the old contents removed, so a
    /// reader or a crash sees either the old folder or the new one, never neither.
    public static func publishDirectory(_ staged: String, at path: String) throws {
        let fm = FileManager.default
        switch FileKind(lstat: path) {
        case .missing, .directory: break
        default:
            throw IdxError("\(path): is \(FileKind.describe(path)), not a folder; idx publishes folders only over folders it wrote. Choose another --out.")
        }
        if FileKind(lstat: path) == .directory {
            if idx_rename_exchange(staged, path) != 0 {
                throw IdxError("cannot publish \(staged) as \(path): \(String(cString: strerror(errno))).")
            }
            try? fm.removeItem(atPath: staged) // now holds the previous contents
        } else {
            try createParent(of: path)
            try rename(staged, to: path)
        }
    }

    /// Removes the temporary siblings of `path` (`.name.tmp-PID-…`, staged folders and files)
    /// whose process is gone: a killed ingest or checkpoint leaves them, and only idx makes
    /// such names. Call it while holding the output's lock.
    public static func removeStaleStaging(of path: String) {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        let prefix = "." + url.lastPathComponent + ".tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
        for name in names where name.hasPrefix(prefix) {
            let pidText = name.dropFirst(prefix.count).prefix { $0 != "-" }
            guard let pid = Int32(pidText) else { continue }
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH {
                try? FileManager.default.removeItem(atPath: dir + "/" + name)
            }
        }
    }

    /// Creates the parent folder of `path` if needed.
    public static func createParent(of path: String) throws {
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw IdxError("\(dir): cannot create the folder: \(error.localizedDescription)")
        }
    }
}
