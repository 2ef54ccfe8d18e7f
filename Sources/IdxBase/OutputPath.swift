import Foundation

/// What lies at a path, without following a symbolic link (for messages and checks).
public enum FileKind: Equatable {
    case missing, regular, directory, symbolicLink, fifo, characterDevice, blockDevice, socket, other

    public init(lstat path: String) {
        var st = stat()
        guard lstat(path, &st) == 0 else { self = .missing; return }
        self.init(mode: st.st_mode)
    }

    /// The kind `stat` (following links) sees.
    public init(stat path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { self = .missing; return }
        self.init(mode: st.st_mode)
    }

    public init(mode: mode_t) {
        switch mode & S_IFMT {
        case S_IFREG: self = .regular
        case S_IFDIR: self = .directory
        case S_IFLNK: self = .symbolicLink
        case S_IFIFO: self = .fifo
        case S_IFCHR: self = .characterDevice
        case S_IFBLK: self = .blockDevice
        case S_IFSOCK: self = .socket
        default: self = .other
        }
    }

    public var name: String {
        switch self {
        case .missing: return "missing"
        case .regular: return "a regular file"
        case .directory: return "a folder"
        case .symbolicLink: return "a symbolic link"
        case .fifo: return "a FIFO (named pipe)"
        case .characterDevice: return "a character device"
        case .blockDevice: return "a block device"
        case .socket: return "a socket"
        case .other: return "not a regular file"
        }
    }

    /// "a symbolic link to /etc/passwd", "a FIFO (named pipe)", …
    public static func describe(_ path: String) -> String {
        let kind = FileKind(lstat: path)
        if kind == .symbolicLink, let target = try? FileManager.default.destinationOfSymbolicLink(atPath: path) {
            return "a symbolic link to " + IdxError.printable(target)
        }
        return kind.name
    }
}

/// The kinds of folder idx writes, and the entries it puts in each: an existing folder is
/// replaced (or written into) only when every entry is one idx writes for that kind and
/// idx's own marker is there, or when it is empty. Anything else belongs to someone else.
public enum OutputKind: String, Sendable {
    case corpus, model, index

    /// What a command calls it in messages.
    var noun: String {
        switch self {
        case .corpus: return "corpus folder"
        case .model: return "model folder"
        case .index: return "index folder"
        }
    }

    /// The command that writes it.
    var writer: String { self == .corpus ? "idx ingest" : self == .model ? "idx train" : "idx index" }

    /// A corpus or model folder is replaced whole by its new version; an index folder is
    /// written into (new segments and generations, old ones collected).
    var replacesWhole: Bool { self != .index }

    /// Whether idx writes an entry of this name in a folder of this kind (staging and
    /// temporary files included).
    func isOwnEntry(_ name: String) -> Bool {
        if name.hasPrefix(".") && name.contains(".tmp-") { return true }  // AtomicFile.temporarySibling
        switch self {
        case .corpus:
            return ["manifest.json", "tokenizer.json", ".cleaned-texts"].contains(name)
                || Self.matches(name, prefix: "tokens-", suffix: ".bin.zst") || Self.matches(name, prefix: "metadata-", suffix: ".jsonl.zst")
        case .model:
            return ["model.safetensors", "optimizer.safetensors", "tokenizer.json", "train-log.csv", "state.json"].contains(name)
        case .index:
            return name == "CURRENT" || name == "LOCK" || name == "segments" || Self.matches(name, prefix: "gen-", suffix: "")
        }
    }

    /// The file whose presence says idx wrote the folder.
    func hasMarker(_ dir: String) -> Bool {
        switch self {
        case .corpus:
            struct Probe: Decodable { var format: String? }
            guard let data = OutputPath.readSmallFile(dir + "/manifest.json", limit: 64 << 20),
                  let p = try? JSONDecoder().decode(Probe.self, from: data) else { return false }
            return p.format == "idx-corpus"
        case .model:
            return FileKind(lstat: dir + "/model.safetensors") == .regular || FileKind(lstat: dir + "/state.json") == .regular
        case .index:
            return FileKind(lstat: dir + "/CURRENT") == .regular || FileKind(lstat: dir + "/segments") == .directory
        }
    }

    private static func matches(_ name: String, prefix: String, suffix: String) -> Bool {
        guard name.hasPrefix(prefix), name.hasSuffix(suffix), name.count > prefix.count + suffix.count else { return false }
        return name.dropFirst(prefix.count).dropLast(suffix.count).allSatisfy { $0.isASCII && $0.isNumber }
    }
}

/// The checks every output path passes before idx writes anything: idx only ever replaces
/// or removes what it wrote itself.
public enum OutputPath {
    /// Refuses an output folder `path` that idx did not write: it must be missing, empty, or a
    /// folder of `kind` holding only what idx writes there. `force` accepts a folder with other
    /// entries, but never a symbolic link, a non-folder, a folder holding one of `inputs`, the
    /// working folder or one of its parents, or `/` and the home folder.
    public static func checkFolder(_ path: String, kind: OutputKind, inputs: [String], force: Bool = false) throws {
        let shown = IdxError.printable(path, limit: 200)
        let fileKind = FileKind(lstat: path)
        switch fileKind {
        case .missing: return
        case .directory: break
        case .symbolicLink:
            throw IdxError("\(shown): is \(FileKind.describe(path)); idx writes a \(kind.noun) only at a real folder path, never through a link. Give the folder itself or another --out.")
        default:
            throw IdxError("\(shown): exists and is \(fileKind.name), not a folder; idx would have to replace it with a \(kind.noun). Choose another --out.")
        }
        let real = realPath(path)
        for input in inputs where !input.isEmpty {
            let r = realPath(input)
            if r == real || r.hasPrefix(real == "/" ? "/" : real + "/") {
                throw IdxError("\(shown): holds the input \(IdxError.printable(input, limit: 200)); idx never replaces a folder that holds its input. Choose another --out.")
            }
        }
        let cwd = realPath(FileManager.default.currentDirectoryPath)
        let home = realPath(NSHomeDirectory())
        if real == "/" || real == home || cwd == real || cwd.hasPrefix(real + "/") {
            throw IdxError("\(shown): is \(real == "/" ? "the root folder" : real == home ? "the home folder" : "the working folder or one of its parents"); idx never writes a \(kind.noun) there, even with --force. Choose a new folder for --out.")
        }
        let entries: [String]
        do { entries = try FileManager.default.contentsOfDirectory(atPath: path) } catch {
            throw IdxError("\(shown): cannot list the folder (\(error.localizedDescription)); check its permissions or choose another --out.")
        }
        if entries.isEmpty || force { return }
        let foreign = entries.filter { !kind.isOwnEntry($0) }.sorted()
        if foreign.isEmpty && kind.hasMarker(path) { return }
        let what = foreign.isEmpty
            ? "no \(kind == .corpus ? "idx-corpus manifest.json" : kind == .model ? "model.safetensors or state.json" : "CURRENT or segments/")"
            : "\(foreign.count) entr\(foreign.count == 1 ? "y" : "ies") idx did not write: " + foreign.prefix(3).map { IdxError.printable($0, limit: 60) }.joined(separator: ", ") + (foreign.count > 3 ? ", …" : "")
        let consequence = kind.replacesWhole ? "idx would replace it whole and those would be lost" : "idx would write its index among them"
        throw IdxError("\(shown): exists and is not a \(kind.noun) that \(kind.writer) wrote (\(what)); \(consequence). Choose another --out, empty the folder, or pass --force to use it anyway.")
    }

    /// Refuses a file output that is not a regular file: idx replaces files by rename, which
    /// would put a regular file in place of a symbolic link, a device or a FIFO.
    public static func checkFile(_ path: String) throws {
        let kind = FileKind(lstat: path)
        guard kind == .missing || kind == .regular else {
            throw IdxError("\(IdxError.printable(path, limit: 200)): is \(FileKind.describe(path)); idx writes its output files only as regular files (replaced by rename). Choose another path.")
        }
    }

    /// `path` with links and `..` resolved as far as it exists (the rest appended as given).
    static func realPath(_ path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        var head = URL(fileURLWithPath: absolute).standardizedFileURL.path
        var tail: [String] = []
        while head != "/" {
            if let r = realpath(head, nil) {
                defer { free(r) }
                return ([String(cString: r)] + tail.reversed()).joined(separator: "/").replacingOccurrences(of: "//", with: "/")
            }
            tail.append((head as NSString).lastPathComponent)
            head = (head as NSString).deletingLastPathComponent
        }
        return "/" + tail.reversed().joined(separator: "/")
    }

    /// The bytes of a small regular file (no FIFO, device or link target read), nil when it is
    /// missing, not regular or larger than `limit`.
    public static func readSmallFile(_ path: String, limit: Int) -> Data? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, Int(st.st_size) <= limit else { return nil }
        var out = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while out.count <= limit {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out.append(contentsOf: buffer[0 ..< n])
        }
        return out.count <= limit ? out : nil
    }
}

/// One writer per output folder: `idx ingest`, `train`, `index` (and a resumed `train`)
/// hold an flock on `.<name>.lock` beside the folder while they write it, so a second writer
/// is refused with the first one's pid instead of both exiting 0 and the last one winning.
public enum OutputLock {
    public static func path(for folder: String) -> String {
        var f = folder
        while f.count > 1 && f.hasSuffix("/") { f.removeLast() }
        let url = URL(fileURLWithPath: f)
        return url.deletingLastPathComponent().path + "/." + url.lastPathComponent + ".lock"
    }

    /// Takes the lock of `folder` for `command` (e.g. "idx ingest"), or throws naming the holder.
    public static func acquire(_ folder: String, command: String) throws -> ProcessLock {
        try ProcessLock(path: path(for: folder), holderKind: "\(command) writing \(IdxError.printable(folder, limit: 200))",
                        removeOnRelease: true)
    }
}
