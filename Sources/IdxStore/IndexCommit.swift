import CSupport
import Foundation
import IdxBase

/// The one commit path of an index folder, shaped like SQLite's: every writer (`idx index`,
/// `idx index --procs N`, nightly's publish) goes through it.
///
///     indexes/<name>/LOCK                     the writer lock: flock(2), held only while a
///                                             generation is begun and while it is committed
///     indexes/<name>/segments/.pending-…      a generation in progress: its number and its
///                                             writer's pid (its segments are seg-<number>-…)
///
/// 1. `begin`, under the lock: read the live manifest, choose the generation's number, record
///    it as in progress. The lock is then released: embedding and writing segments take long,
///    and other writers (nightly's publish) must not wait on them.
/// 2. Segment files are written, fsynced and renamed (`VectorIndexWriter.writeSegment`, on any
///    rank); then the segments folder is fsynced.
/// 3. `commit`, under the lock: the manifest is written into a staged generation folder
///    (fsynced), renamed to `gen-NNNNNN`, the index folder fsynced; then `CURRENT` is replaced
///    by rename and the folder fsynced again. A reader, a crash or a power failure sees the
///    old generation or the new one, never a mix, and never loses a switch that returned.
/// 4. Garbage collection, still under the lock: generations older than the previous one, and
///    segments no kept generation lists, except those of a generation in progress whose
///    writer is alive (another writer's segments, written but not yet committed).
public final class IndexCommit {
    public let directory: String
    public let plan: VectorIndexWriter.Plan
    private let pendingMarker: String?

    /// Test hook: called after the new generation is fully written and before CURRENT is
    /// switched; throwing here simulates a crash at the worst moment. Tests set it on one
    /// thread before writing; nothing else touches it.
    nonisolated(unsafe) static var beforeSwitch: (() throws -> Void)?

    /// The file every writer of `dir` locks.
    public static func lockPath(_ dir: String) -> String { dir + "/LOCK" }

    /// Takes the writer lock of `dir`, waiting for the current holder (it holds it only for a
    /// begin or a commit: milliseconds), runs `body`, and releases it.
    static func locked<T>(_ dir: String, _ body: () throws -> T) throws -> T {
        let lock = try ProcessLock(path: lockPath(dir), holderKind: "idx writer of \(IdxError.printable(dir, limit: 200))",
                                   removeOnRelease: false, wait: true)
        defer { lock.release() }
        return try body()
    }

    /// Begins a generation of `dir`: plans it (see `VectorIndexWriter.plan`) and records it as
    /// in progress, so that no other writer's garbage collection removes its segments.
    public static func begin(directory dir: String, dimension d: Int, provenance: IndexProvenance, append: Bool,
                             lexicalWeight: Float?) throws -> IndexCommit {
        try FileManager.default.createDirectory(atPath: dir + "/segments", withIntermediateDirectories: true)
        return try locked(dir) {
            let plan = try VectorIndexWriter.plan(directory: dir, dimension: d, provenance: provenance, append: append,
                                                  lexicalWeight: lexicalWeight)
            let marker = dir + "/segments/" + PendingGeneration.name()
            try AtomicFile.write(Data(PendingGeneration.mine(plan.generation).text.utf8), to: marker)
            return IndexCommit(directory: dir, plan: plan, pendingMarker: marker)
        }
    }

    /// A commit of a plan another process began (rank 0 of `--procs N` begins and commits;
    /// the other ranks only write segments).
    init(directory: String, plan: VectorIndexWriter.Plan, pendingMarker: String?) {
        self.directory = directory; self.plan = plan; self.pendingMarker = pendingMarker
    }

    deinit { abandon() }

    /// Gives the generation up: its segments become garbage for the next commit.
    public func abandon() {
        if let m = pendingMarker { unlink(m) }
    }

    /// Makes the segments complete on disk (their folder's entries included).
    public func syncSegments() throws { try AtomicFile.syncFolder(directory + "/segments") }

    /// Publishes the generation holding `segments` (after the live ones when appending). An
    /// append is made onto the manifest live at commit time: a generation another writer
    /// published since `begin` keeps its segments.
    public func commit(segments new: [IndexManifest.SegmentEntry], dimension d: Int, provenance: IndexProvenance,
                       standardization: IndexManifest.Standardization?) throws -> IndexManifest {
        defer { abandon() }
        try syncSegments()
        return try Self.locked(directory) {
            var base: [IndexManifest.SegmentEntry] = []
            var previous: Int = 0
            if FileManager.default.fileExists(atPath: IndexLayout.currentFile(directory)) {
                let live = try IndexLayout.readCurrent(directory).manifest
                previous = live.generation
                if plan.append {
                    guard live.generation == plan.previous?.generation || (live.dimension == d && live.modelHash == provenance.modelHash
                            && live.maxTokens == provenance.maxTokens && live.standardization == standardization) else {
                        throw IdxError("\(directory): another writer published generation \(live.generation) with another model or space while this append ran; nothing was published: run the append again.")
                    }
                    base = live.segments
                }
            }
            let manifest = IndexManifest(
                format: IndexManifest.format, formatVersion: IndexManifest.version, generation: previous + 1,
                dimension: d, count: (base + new).reduce(0) { $0 + $1.count },
                modelHash: provenance.modelHash, tokenizerHash: provenance.tokenizerHash,
                modelDirectory: provenance.modelDirectory, maxTokens: provenance.maxTokens,
                standardization: standardization, segments: base + new,
                created: ISO8601DateFormatter().string(from: Date()),
                lexicalWeight: plan.lexicalWeight)
            // No longer in progress: the garbage collection after the switch must not spare
            // other writers' leftovers that carry the same generation number.
            abandon()
            try Self.switchTo(manifest, in: directory)
            return manifest
        }
    }

    /// Writes `manifest` as its generation's folder and switches CURRENT to it (steps 3 and 4
    /// above; the caller holds the lock and every segment is complete on disk).
    static func switchTo(_ manifest: IndexManifest, in dir: String) throws {
        let fm = FileManager.default
        let generation = IndexLayout.generationName(manifest.generation)
        let staged = AtomicFile.temporarySibling(of: dir + "/" + generation)
        try fm.createDirectory(atPath: staged, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(manifest), to: staged + "/manifest.json")
        try AtomicFile.syncFolder(staged)
        if fm.fileExists(atPath: dir + "/" + generation) { try fm.removeItem(atPath: dir + "/" + generation) } // left by a crash
        try AtomicFile.rename(staged, to: dir + "/" + generation)
        try AtomicFile.syncFolder(dir)
        try beforeSwitch?()
        try AtomicFile.write(Data((generation + "\n").utf8), to: IndexLayout.currentFile(dir))
        try AtomicFile.syncFolder(dir)
        collectGarbage(dir, keep: [manifest.generation, manifest.generation - 1])
    }

    /// Makes the live generation of the complete index folder `candidate` the next generation
    /// of `published` (nightly's publish): its segments are linked in (segments are immutable),
    /// its manifest is renumbered and its model path re-expressed from `published`, then
    /// committed as above. Repeating it after a crash is harmless: a generation already live
    /// with the same segments and model is left alone.
    public static func adopt(from candidate: String, into published: String) throws {
        let fm = FileManager.default
        guard fm.fileExists(atPath: IndexLayout.currentFile(candidate)) else {
            // A killed run already moved it (and removed the candidate): nothing left to do.
            if fm.fileExists(atPath: IndexLayout.currentFile(published)) { return }
            throw IdxError("\(candidate): the candidate index is missing; run idx nightly again to rebuild it.")
        }
        var (_, manifest) = try IndexLayout.readCurrent(candidate)
        manifest.modelDirectory = ModelPath.reexpress(manifest.modelDirectory, from: candidate, to: published)
        try fm.createDirectory(atPath: published + "/segments", withIntermediateDirectories: true)
        try locked(published) {
            var previous: IndexManifest?
            if fm.fileExists(atPath: IndexLayout.currentFile(published)) {
                previous = try IndexLayout.readCurrent(published).manifest
                if let p = previous, p.segments == manifest.segments, p.modelHash == manifest.modelHash { return }
            }
            for file in manifest.segments.flatMap(\.files) {
                let target = published + "/" + file
                if fm.fileExists(atPath: target) { continue }
                if link(candidate + "/" + file, target) != 0 {
                    let tmp = AtomicFile.temporarySibling(of: target)
                    try fm.copyItem(atPath: candidate + "/" + file, toPath: tmp)
                    try AtomicFile.syncFile(tmp)
                    try AtomicFile.rename(tmp, to: target)
                }
            }
            try AtomicFile.syncFolder(published + "/segments")
            manifest.generation = (previous?.generation ?? 0) + 1
            try switchTo(manifest, in: published)
        }
    }

    /// Removes generations not in `keep` and the segments no kept generation references,
    /// sparing those of a generation in progress (a live writer's pending marker). The
    /// previous generation stays for readers that opened it. Call it under the lock.
    static func collectGarbage(_ dir: String, keep: [Int]) {
        let fm = FileManager.default
        guard let entries = try? fm.contentsOfDirectory(atPath: dir) else { return }
        var referenced = Set<String>()
        for e in entries where e.hasPrefix("gen-") {
            guard let n = Int(e.dropFirst(4)) else { continue }
            if keep.contains(n),
               let data = fm.contents(atPath: IndexLayout.manifestPath(dir, generation: e)),
               let m = try? JSONDecoder().decode(IndexManifest.self, from: data) {
                for s in m.segments { referenced.formUnion(s.files) }
            } else if !keep.contains(n) {
                try? fm.removeItem(atPath: dir + "/" + e)
            }
        }
        guard let names = try? fm.contentsOfDirectory(atPath: dir + "/segments") else { return }
        var inProgress = Set<Int>()
        for name in names where name.hasPrefix(PendingGeneration.prefix) {
            let path = dir + "/segments/" + name
            if let p = OutputPath.readSmallFile(path, limit: 256).flatMap({ PendingGeneration(String(decoding: $0, as: UTF8.self)) }),
               p.isAlive {
                inProgress.insert(p.generation)
            } else {
                unlink(path)  // its writer died: its segments are garbage
            }
        }
        for s in names where (s.hasSuffix(".idxseg") || s.hasSuffix(".idxlex")) && !referenced.contains("segments/" + s) {
            if let g = VectorIndexWriter.segmentGeneration(s), inProgress.contains(g) { continue }
            try? fm.removeItem(atPath: dir + "/segments/" + s)
        }
    }
}

/// The marker of a generation in progress: `segments/.pending-<pid>-<random>` holding
/// "<generation> <pid> <start time>"; the start time tells a reused pid from its writer.
struct PendingGeneration {
    static let prefix = ".pending-"
    var generation: Int
    var holder: ProcessLock.Holder

    static func name() -> String { prefix + "\(getpid())-\(UInt32.random(in: 0 ... .max))" }
    static func mine(_ generation: Int) -> PendingGeneration {
        PendingGeneration(generation: generation,
                          holder: .init(pid: getpid(), startTime: ProcessLock.startTime(of: getpid()) ?? 0, startedAt: ""))
    }
    init(generation: Int, holder: ProcessLock.Holder) { self.generation = generation; self.holder = holder }
    init?(_ text: String) {
        let f = text.split(whereSeparator: \.isWhitespace)
        guard f.count == 3, let g = Int(f[0]), let pid = Int32(f[1]), let start = UInt64(f[2]) else { return nil }
        self.init(generation: g, holder: .init(pid: pid, startTime: start, startedAt: ""))
    }
    var text: String { "\(generation) \(holder.pid) \(holder.startTime)\n" }
    var isAlive: Bool { ProcessLock.isAlive(holder) }
}

/// The model path an index manifest records: relative to the index folder, so that a project
/// folder moved whole keeps working; absolute only when the model was given by an absolute path.
public enum ModelPath {
    /// What to record for the model folder `model` (as given) in the index folder `index`.
    public static func recorded(_ model: String, index: String) -> String {
        let absolute = URL(fileURLWithPath: model).standardizedFileURL.path
        if model.hasPrefix("/") { return absolute }
        return relative(absolute, from: URL(fileURLWithPath: index).standardizedFileURL.path)
    }

    /// The model folder a manifest's `recorded` path names, for the index folder `index`
    /// ("" stays "": an index of raw vectors has no model). Old manifests hold absolute paths.
    public static func resolve(_ recorded: String, index: String) -> String {
        if recorded.isEmpty || recorded.hasPrefix("/") { return recorded }
        let joined = (index.hasSuffix("/") ? index : index + "/") + recorded
        // Lexically, as the path was computed; keeps a relative index path relative.
        var parts: [Substring] = []
        for p in joined.split(separator: "/", omittingEmptySubsequences: true) {
            if p == "." { continue }
            if p == "..", let last = parts.last, last != ".." { parts.removeLast(); continue }
            parts.append(p)
        }
        let body = parts.joined(separator: "/")
        return joined.hasPrefix("/") ? "/" + body : (body.isEmpty ? "." : body)
    }

    /// `recorded` (relative to `from`) as recorded from `to` instead; absolute stays absolute.
    static func reexpress(_ recorded: String, from: String, to: String) -> String {
        if recorded.isEmpty || recorded.hasPrefix("/") { return recorded }
        let target = URL(fileURLWithPath: resolve(recorded, index: from)).standardizedFileURL.path
        return relative(target, from: URL(fileURLWithPath: to).standardizedFileURL.path)
    }

    /// The relative path from folder `base` to `target` (both absolute and standardized).
    static func relative(_ target: String, from base: String) -> String {
        let t = target.split(separator: "/"), b = base.split(separator: "/")
        var common = 0
        while common < t.count && common < b.count && t[common] == b[common] { common += 1 }
        let up = Array(repeating: "..", count: b.count - common)
        let path = (up + t[common...].map(String.init)).joined(separator: "/")
        return path.isEmpty ? "." : path
    }
}
