import Foundation
import IdxBase
import IdxParallel
import IdxCorpus

/// `idx index --procs N`: every rank embeds its contiguous share of the corpus
/// (`Communicator.share`) and writes its own immutable segment; rank 0 publishes one
/// generation listing the N segments in rank order, and only after every rank reported
/// its segment complete (written, fsynced, renamed and read back). A rank that fails or
/// dies before that leaves CURRENT untouched: the previous generation keeps serving, and
/// the orphaned segments are removed by the next successful commit. Rank 0 begins and
/// commits the generation through `IndexCommit`, the one commit path.
///
/// With `--standardize` the statistics are global: the ranks sum Σx, Σx² and the row
/// count (one Allreduce), so every segment is normalised in the same space.
public enum DistributedIndexWriter {
    /// Test hook (IDX_TEST_FAIL_RANK=r): rank r exits with status 3 after writing its
    /// segment and before the ranks agree to publish: the worst moment to fail.
    static var failRank: Int? { ProcessInfo.processInfo.environment["IDX_TEST_FAIL_RANK"].flatMap { Int($0) } }

    /// `embeddings`/`metadata`: this rank's share, documents `shareStart ..< shareStart + count`
    /// of the corpus (their ids). Returns the published result on every rank.
    public static func write(comm: Communicator, directory dir: String, embeddings: [Float], dimension d: Int,
                             metadata: [DocumentMetadata], shareStart: Int,
                             provenance: IndexProvenance, append: Bool, standardize: Bool,
                             lexicalWeight: Float? = VectorIndexWriter.defaultLexicalWeight) throws -> VectorIndexWriter.Result {
        precondition(embeddings.count == metadata.count * d)
        // Rank 0 begins the generation (IndexCommit: under the index's writer lock) and tells
        // the others its plan, so every rank writes segments of the same generation.
        let commit = try agree(comm, "planning the generation") { () throws -> IndexCommit? in
            comm.isRoot ? try IndexCommit.begin(directory: dir, dimension: d, provenance: provenance, append: append,
                                                lexicalWeight: lexicalWeight) : nil
        }
        var planBytes = [UInt8](comm.isRoot ? try JSONEncoder().encode(commit!.plan) : Data())
        try comm.broadcast(bytes: &planBytes, root: 0)
        let plan = try JSONDecoder().decode(VectorIndexWriter.Plan.self, from: Data(planBytes))
        var standardization = plan.inherited
        if !append && standardize {
            var sums = VectorIndexWriter.partialSums(embeddings, dimension: d)
            try sums.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
            standardization = VectorIndexWriter.statistics(sums: &sums, dimension: d)
        }
        let ids = (0 ..< metadata.count).map { Int64(shareStart + $0) }
        let mine = try agree(comm, "writing its segment") { () throws -> (entry: IndexManifest.SegmentEntry, vectorBytes: Int) in
            let s = try VectorIndexWriter.writeSegment(directory: dir, generation: plan.generation, embeddings: embeddings,
                                                       dimension: d, metadata: metadata, ids: ids,
                                                       standardization: standardization, source: provenance.source,
                                                       lexical: plan.lexicalWeight != nil)
            if failRank == comm.rank { exit(3) }
            return s
        }
        // Gather the entries (one broadcast per rank), in rank order.
        var entries: [IndexManifest.SegmentEntry] = []
        var vectorBytes = 0
        for r in 0 ..< comm.size {
            var bytes = r == comm.rank ? [UInt8](try JSONEncoder().encode(Shared(entry: mine.entry, vectorBytes: mine.vectorBytes))) : []
            try comm.broadcast(bytes: &bytes, root: r)
            let s = try JSONDecoder().decode(Shared.self, from: Data(bytes))
            entries.append(s.entry); vectorBytes += s.vectorBytes
        }
        // A rank with an empty share (more ranks than documents) wrote an empty segment: it is left
        // out of the manifest (and so removed by the garbage collection after the publish).
        let published = entries.contains { $0.count > 0 } ? entries.filter { $0.count > 0 } : entries
        let manifest = try agree(comm, "publishing") { () throws -> IndexManifest? in
            comm.isRoot ? try commit!.commit(segments: published, dimension: d, provenance: provenance,
                                             standardization: standardization) : nil
        }
        var manifestBytes = [UInt8](comm.isRoot ? try JSONEncoder().encode(manifest!) : Data())
        try comm.broadcast(bytes: &manifestBytes, root: 0)
        let final = try JSONDecoder().decode(IndexManifest.self, from: Data(manifestBytes))
        return .init(generation: IndexLayout.generationName(final.generation), manifest: final,
                     segmentPath: dir + "/" + mine.entry.file, segmentBytes: entries.reduce(0) { $0 + $1.bytes },
                     vectorBytes: vectorBytes)
    }

    private struct Shared: Codable { var entry: IndexManifest.SegmentEntry; var vectorBytes: Int }

    /// Runs `body` on every rank, then every rank learns whether any failed (one Allreduce),
    /// so that no rank waits in a collective for a rank that gave up. A failed rank rethrows
    /// its own error; the others report which step failed elsewhere.
    static func agree<T>(_ comm: Communicator, _ what: String, _ body: () throws -> T) throws -> T {
        var result: Result<T, Error>
        do { result = .success(try body()) } catch { result = .failure(error) }
        let failed = try comm.allreduceSum(result.isFailure ? 1 : 0)
        if case .failure(let e) = result { throw e }
        if failed > 0 {
            throw IdxError("\(failed) other rank(s) failed while \(what); nothing was published, the previous generation (if any) still serves.")
        }
        return try result.get()
    }
}

private extension Result {
    var isFailure: Bool { if case .failure = self { return true } else { return false } }
}
