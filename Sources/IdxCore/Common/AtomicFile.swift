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

    /// Writes `data` to `path` atomically, with fsync before the rename.
    public static func write(_ data: Data, to path: String) throws {
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
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: path, isDirectory: &isDir) {
            if idx_rename_exchange(staged, path) != 0 {
                throw IdxError("cannot publish \(staged) as \(path): \(String(cString: strerror(errno))).")
            }
            try? fm.removeItem(atPath: staged) // now holds the previous contents
        } else {
            try createParent(of: path)
            try rename(staged, to: path)
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
