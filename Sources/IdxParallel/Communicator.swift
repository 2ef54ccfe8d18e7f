import CMPI
import Foundation
import IdxBase

/// How this process was started, read from the environment Open MPI's
/// launcher (mpirun/orted or a PMIx server such as srun) gives each rank.
public struct MPIEnvironment: Equatable, Sendable {
    /// Rank and world size announced by the launcher; nil when not started by one.
    public var rank: Int?
    public var size: Int?

    public init(_ environment: [String: String] = ProcessInfo.processInfo.environment) {
        func int(_ keys: [String]) -> Int? {
            for key in keys { if let v = environment[key], let n = Int(v) { return n } }
            return nil
        }
        rank = int(["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"])
        size = int(["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"])
        // PMIx alone (e.g. srun --mpi=pmix) announces the rank but not the size.
        if size == nil, rank != nil, environment["PMIX_NAMESPACE"] != nil { size = 0 }
    }

    /// True when an MPI launcher started this process: idx then joins the job.
    public var isLaunchedByMPI: Bool { rank != nil }
}

/// The ranks of one MPI job (MPI_COMM_WORLD), or a single process when idx
/// runs without MPI: then every collective is the identity, so training code
/// calls the same functions either way.
///
/// Collectives are blocking and must be called by every rank in the same
/// order with the same counts (MPI's rule). Errors are fatal: Open MPI's
/// default handler for MPI_COMM_WORLD aborts the job, and `abort` ends every
/// rank after printing the reason on this one.
public final class Communicator: @unchecked Sendable {
    public let rank: Int
    public let size: Int
    public let usesMPI: Bool
    private var finalized = false

    public var isRoot: Bool { rank == 0 }

    private init(rank: Int, size: Int, usesMPI: Bool) {
        self.rank = rank; self.size = size; self.usesMPI = usesMPI
    }

    /// One process, no MPI.
    public static func single() -> Communicator { Communicator(rank: 0, size: 1, usesMPI: false) }

    /// Joins the MPI job when a launcher started this process, else a single
    /// process. Loads libmpi only in the first case.
    public static func start(environment: MPIEnvironment = MPIEnvironment()) throws -> Communicator {
        guard environment.isLaunchedByMPI else { return single() }
        try loadLibrary()
        var initialized: Int32 = 0
        try check(idx_mpi_initialized(&initialized), "MPI_Initialized")
        if initialized == 0 { try check(idx_mpi_init(), "MPI_Init") }
        MPILauncher.configureRankThreads()
        var rank: Int32 = 0, size: Int32 = 0
        try check(idx_mpi_rank(&rank), "MPI_Comm_rank")
        try check(idx_mpi_size(&size), "MPI_Comm_size")
        return Communicator(rank: Int(rank), size: Int(size), usesMPI: true)
    }

    /// Loads Open MPI's libmpi, or explains how to install it.
    public static func loadLibrary() throws {
        var reason = [CChar](repeating: 0, count: 512)
        if idx_mpi_load(&reason, reason.count) != 0 {
            let text = String(decoding: reason.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw IdxError("\(text). \(MPILauncher.installAdvice)")
        }
    }

    /// The libmpi version line, e.g. "Open MPI v4.1.4, …" (empty without MPI).
    public static func libraryVersion() -> String {
        var buffer = [CChar](repeating: 0, count: 512)
        guard idx_mpi_is_loaded() != 0, idx_mpi_library_version(&buffer, buffer.count) == 0 else { return "" }
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.split(separator: "\n").first.map(String.init) ?? ""
    }

    private static func check(_ code: Int32, _ call: String) throws {
        if code != 0 { throw IdxError("\(call) failed with MPI error \(code)") }
    }

    // MARK: collectives

    /// Copies `buffer` on `root` into `buffer` on every rank.
    public func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, root: Int = 0) throws {
        guard usesMPI, buffer.count > 0 else { return }
        try Self.check(idx_mpi_bcast_floats(buffer.baseAddress, Int64(buffer.count), Int32(root)), "MPI_Bcast")
    }

    public func broadcast(_ array: inout [Float], root: Int = 0) throws {
        try array.withUnsafeMutableBufferPointer { try broadcast($0, root: root) }
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int = 0) throws {
        guard usesMPI, buffer.count > 0 else { return }
        try Self.check(idx_mpi_bcast_bytes(buffer.baseAddress, Int64(buffer.count), Int32(root)), "MPI_Bcast")
    }

    /// Broadcasts bytes whose length only `root` knows (e.g. a JSON config).
    public func broadcast(bytes: inout [UInt8], root: Int = 0) throws {
        guard usesMPI else { return }
        var length = [Int64(bytes.count)]
        try length.withUnsafeMutableBytes { try broadcast($0, root: root) }
        if rank != root { bytes = [UInt8](repeating: 0, count: Int(length[0])) }
        try bytes.withUnsafeMutableBytes { try broadcast($0, root: root) }
    }

    /// Sums `buffer` over all ranks, in place (MPI_IN_PLACE, chunked for large buffers).
    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        guard usesMPI, buffer.count > 0 else { return }
        try Self.check(idx_mpi_allreduce_sum_floats(buffer.baseAddress, Int64(buffer.count)), "MPI_Allreduce")
    }

    public func allreduceSum(_ array: inout [Float]) throws {
        try array.withUnsafeMutableBufferPointer { try allreduceSum($0) }
    }

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {
        guard usesMPI, buffer.count > 0 else { return }
        try Self.check(idx_mpi_allreduce_sum_doubles(buffer.baseAddress, Int64(buffer.count)), "MPI_Allreduce")
    }

    public func allreduceSum(_ value: Double) throws -> Double {
        var v = [value]
        try v.withUnsafeMutableBufferPointer { try allreduceSum($0) }
        return v[0]
    }

    public func allreduceSum(_ value: Int) throws -> Int {
        guard usesMPI else { return value }
        var v = Int64(value)
        try Self.check(idx_mpi_allreduce_sum_int64(&v, 1), "MPI_Allreduce")
        return Int(v)
    }

    public func allreduceMax(_ value: Double) throws -> Double {
        guard usesMPI else { return value }
        var v = value
        try Self.check(idx_mpi_allreduce_max_doubles(&v, 1), "MPI_Allreduce")
        return v
    }

    /// Sums `send` (the same length on every rank) over all ranks and leaves this rank's part,
    /// `parts[rank]`, in `recv` (MPI_Reduce_scatter): half the traffic of an Allreduce, for a
    /// sharded update. `parts`: contiguous, in rank order, covering `send`. Without MPI it copies.
    public func reduceScatterSum(_ send: UnsafeBufferPointer<Float>, into recv: UnsafeMutablePointer<Float>, parts: [Range<Int>]) throws {
        precondition(parts.count == size && parts.last?.upperBound == send.count)
        guard usesMPI else { recv.update(from: send.baseAddress! + parts[rank].lowerBound, count: parts[rank].count); return }
        let counts = parts.map { Int32($0.count) }
        try Self.check(idx_mpi_reduce_scatter_sum_floats(send.baseAddress, recv, counts), "MPI_Reduce_scatter")
    }

    /// Gives every rank all parts of `buffer`: rank r's `parts[r]` is copied to every rank
    /// (MPI_Allgatherv, in place). Without MPI it does nothing.
    public func allgather(_ buffer: UnsafeMutableBufferPointer<Float>, parts: [Range<Int>]) throws {
        precondition(parts.count == size && parts.last?.upperBound == buffer.count)
        guard usesMPI else { return }
        let counts = parts.map { Int32($0.count) }, displs = parts.map { Int32($0.lowerBound) }
        try Self.check(idx_mpi_allgatherv_floats(buffer.baseAddress, counts, displs), "MPI_Allgatherv")
    }

    /// `count` items cut into `size` contiguous parts whose boundaries are multiples of `align`
    /// (the last part takes the rest): what each rank updates in a sharded step.
    public static func parts(of count: Int, size: Int, align: Int = 1) -> [Range<Int>] {
        let blocks = (count + align - 1) / align
        let bounds = (0 ... size).map { r in min(count, (blocks * r / size) * align) }
        return (0 ..< size).map { bounds[$0] ..< ($0 == size - 1 ? count : bounds[$0 + 1]) }
    }

    /// `count` floats of memory that every rank of this job reads and writes (an MPI-3 shared
    /// window: one block, allocated by rank 0), or nil when the ranks are not all on this host,
    /// without MPI, or with IDX_MPI_SHARED=0 (message passing then; also how tests cover it).
    /// Only one window exists; it lives until finalize().
    public func sharedFloats(count: Int) throws -> UnsafeMutablePointer<Float>? {
        guard usesMPI, size > 1, ProcessInfo.processInfo.environment["IDX_MPI_SHARED"] != "0" else { return nil }
        var base: UnsafeMutableRawPointer?
        let rc = idx_mpi_shared_window(count * MemoryLayout<Float>.stride, &base)
        if rc == -2 { return nil }
        try Self.check(rc, "MPI_Win_allocate_shared")
        return base?.bindMemory(to: Float.self, capacity: count)
    }

    /// Waits for every rank and makes their stores to the shared window visible to all.
    public func sharedSync() throws {
        try Self.check(idx_mpi_shared_sync(), "MPI_Win_sync")
    }

    public func barrier() throws {
        guard usesMPI else { return }
        try Self.check(idx_mpi_barrier(), "MPI_Barrier")
    }

    /// Prints `message` naming this rank and ends the whole job with `code`.
    /// Without MPI it prints and exits.
    public func abort(_ message: String, code: Int32 = 1) -> Never {
        let prefix = usesMPI ? "idx: rank \(rank) of \(size): " : "idx: "
        FileHandle.standardError.write(Data((prefix + message + "\n").utf8))
        if usesMPI { _ = idx_mpi_abort(code) }
        exit(code)
    }

    /// Ends MPI on this rank (idempotent). Every rank must call it before exiting normally.
    public func finalize() {
        guard usesMPI, !finalized else { return }
        finalized = true
        var done: Int32 = 0
        _ = idx_mpi_finalized(&done)
        if done == 0 { _ = idx_mpi_finalize() }
    }

    /// The contiguous share `[lower, upper)` of `count` items for this rank:
    /// the first `count % size` ranks get one extra, so shares differ by at most one.
    public func share(of count: Int) -> Range<Int> { Self.share(of: count, rank: rank, size: size) }

    public static func share(of count: Int, rank: Int, size: Int) -> Range<Int> {
        let base = count / size, extra = count % size
        let lower = rank * base + min(rank, extra)
        return lower ..< lower + base + (rank < extra ? 1 : 0)
    }
}
