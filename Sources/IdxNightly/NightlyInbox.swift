import Foundation
import IdxBase

/// Resolves the configured inbox (folders, CSV paths, http(s) URLs) into local
/// files with their content hashes. Hashes are cached by (path, size, mtime)
/// in the journal, so an unchanged inbox costs one stat per file.
public struct NightlyInbox {
    public struct File: Codable, Equatable {
        public var origin: String   // as configured (a URL, or the CSV's path)
        public var local: String
        public var xxh64: String
        public var size: Int64
        public var downloaded: Bool
    }

    public struct Scan {
        public var files: [File] = []
        /// Problems that do not stop the run (an unreachable URL): reported, retried next run.
        public var problems: [String] = []
        /// Entries of inbox folders, and downloads, that are no regular file of an acceptable
        /// size (a FIFO, a link, a folder named x.csv, a file over max_file_bytes): the job
        /// quarantines them, the rest of the batch goes on.
        public var rejected: [(local: String, origin: String, reason: String)] = []
        public var downloads: [Downloader.Result] = []
    }

    /// Lists the inbox. A folder contributes its `*.csv` files (by name, not
    /// recursive); a missing folder or file is an error (a typo in the config
    /// must not look like "nothing new"), an unreachable URL is a problem.
    public static func scan(_ sources: [String], downloads: String, downloader: Downloader,
                            cache: inout [String: NightlyState.CachedHash], maxFileBytes: Int64 = NightlyConfig.defaultMaxFileBytes,
                            followSymlinks: Bool = false, skipOrigins: Set<String> = []) throws -> Scan {
        var scan = Scan()
        let fm = FileManager.default
        var seenLocal = Set<String>()
        func add(origin: String, local: String, downloaded: Bool, movable: Bool = true) throws {
            guard seenLocal.insert(local).inserted else { return }
            func reject(_ why: String) {
                if movable { scan.rejected.append((local, origin, why)) } else {
                    scan.problems.append("inbox: \(IdxError.printable(local, limit: 200)) \(why); skipped. Fix [inbox] sources.")
                }
            }
            // Only regular files are read (a FIFO blocks, /dev/zero never ends), and only up
            // to the size limit; links only when the config allows them.
            let kind = FileKind(lstat: local)
            let target = kind == .symbolicLink && (followSymlinks || !movable) ? FileKind(stat: local) : kind
            guard target == .regular else {
                reject("is \(FileKind.describe(local))\(kind == .symbolicLink && !followSymlinks ? " ([inbox] follow_symlinks is off)" : ""), not a regular CSV file")
                return
            }
            var st = stat()
            if stat(local, &st) == 0, Int64(st.st_size) > maxFileBytes {
                reject("is \(st.st_size) bytes, more than [inbox] max_file_bytes (\(maxFileBytes))")
                return
            }
            let (hash, size) = try hashCached(local, cache: &cache)
            scan.files.append(File(origin: origin, local: local, xxh64: hash, size: size, downloaded: downloaded))
        }
        for source in sources {
            let lower = source.lowercased()
            if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
                guard let url = URL(string: source), url.host != nil else {
                    throw IdxError("inbox: `\(IdxError.printable(source))` is not a valid URL; fix [inbox] sources in the config.")
                }
                if skipOrigins.contains(source) { continue }  // quarantined: fetched again after --retry-quarantined
                let dest = downloads + "/" + XXHash64.hex(XXHash64.hash(Array(source.utf8))) + "-" + safeName(url.lastPathComponent)
                do {
                    let r = try downloader.fetch(url, to: dest)
                    if !r.alreadyComplete { scan.downloads.append(r) }
                    try add(origin: source, local: dest, downloaded: true)
                } catch let e as IdxError {
                    scan.problems.append(e.message)
                }
                continue
            }
            let sourceKind = FileKind(stat: source)
            guard sourceKind != .missing else {
                throw IdxError("inbox: \(IdxError.printable(source, limit: 200)) does not exist; create it or fix [inbox] sources in the config (or --inbox).")
            }
            if sourceKind == .directory {
                let names = try fm.contentsOfDirectory(atPath: source)
                    .filter { $0.lowercased().hasSuffix(".csv") && !$0.hasPrefix(".") }.sorted()
                for name in names {
                    let path = (source.hasSuffix("/") ? source : source + "/") + name
                    try add(origin: path, local: path, downloaded: false)
                }
            } else {
                // A configured path (not an inbox folder's entry) is reported, never moved.
                try add(origin: source, local: source, downloaded: false, movable: false)
            }
        }
        return scan
    }

    static func safeName(_ s: String) -> String {
        let cleaned = String(s.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_" ? $0 : "_" })
        return cleaned.isEmpty ? "download.csv" : cleaned
    }

    static func hashCached(_ path: String, cache: inout [String: NightlyState.CachedHash]) throws -> (String, Int64) {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw IdxError("inbox: cannot stat \(path): \(String(cString: strerror(errno))).")
        }
        let size = Int64(st.st_size)
        let mtime = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        if let c = cache[path], c.size == size, c.mtimeNanos == mtime { return (c.xxh64, size) }
        let (h, _) = try XXHash64.hashFile(at: path)
        let hex = XXHash64.hex(h)
        cache[path] = .init(size: size, mtimeNanos: mtime, xxh64: hex)
        return (hex, size)
    }
}
