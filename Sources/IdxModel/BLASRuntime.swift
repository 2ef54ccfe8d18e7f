import COpenBLAS
import CSupport
import Foundation

/// OpenBLAS kernel selection at run time.
///
/// Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) picks its kernels from the CPU's model number, and
/// CPUs newer than it get a core far below what they can run: AMD Zen 4 runs its Haswell (AVX2)
/// kernels although it has AVX-512, and an Intel model it does not know (Emerald Rapids, model
/// 207) falls back to Prescott (SSE3), far slower (docs/train.md). Its SkylakeX
/// kernels run the encoder's GEMM shapes about twice as fast as Haswell's on an AVX-512 CPU
/// (sgemm 2048×384×128: ~30 vs ~62 GFLOP/s on one core). OpenBLAS reads `OPENBLAS_CORETYPE`
/// only when it is loaded, before `main`, so `preferWidestKernels()` sets it and re-runs
/// OpenBLAS's own dynamic selection (`gotoblas_dynamic_quit` / `gotoblas_dynamic_init`, exported
/// by DYNAMIC_ARCH builds). It changes nothing when the user set `OPENBLAS_CORETYPE`, when
/// OpenBLAS already chose kernels as wide as the CPU's vector units, or when the library is not
/// a DYNAMIC_ARCH build. Call it before any BLAS work starts on other threads.
public enum BLASRuntime {
    // Unsafe is sound here: set once, by the main thread, before any BLAS work starts elsewhere.
    nonisolated(unsafe) private static var done = false

    /// The core OpenBLAS uses ("Haswell", "SkylakeX", …).
    public static var coreName: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    /// One BLAS thread from now on, and OpenBLAS's idle workers ended: for a short command
    /// whose matrices are too small to split (a query's few tokens).
    public static func useOneThread() {
        openblas_set_num_threads(1)
        idx_blas_stop_workers()
    }

    /// `body` with one BLAS thread, the former count restored after: for a stretch of work that
    /// runs many small products on threads of its own (a batch of queries searched one a core),
    /// where OpenBLAS's own threads would only compete for the cores. Not for use while other
    /// threads run BLAS work (the count is the process's).
    public static func withOneThread<T>(_ body: () throws -> T) rethrows -> T {
        let before = openblas_get_num_threads()
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(before) }
        return try body()
    }

    /// OpenBLAS's cores with AVX-512 kernels, and those with at least AVX2 + FMA ones.
    static let avx512Cores: Set<String> = ["SkylakeX", "Cooperlake", "SapphireRapids"]
    static let avx2Cores = avx512Cores.union(["Haswell", "Zen"])

    /// The core to switch to, if any: the widest the CPU runs (`flags`: /proc/cpuinfo's) when
    /// OpenBLAS chose a narrower one.
    public static func betterCore(than core: String, flags: Set<String>) -> String? {
        if ["avx512f", "avx512dq", "avx512bw", "avx512vl"].allSatisfy(flags.contains) {
            return avx512Cores.contains(core) ? nil : "SkylakeX"
        }
        if ["avx2", "fma"].allSatisfy(flags.contains) {
            return avx2Cores.contains(core) ? nil : "Haswell"
        }
        return nil
    }

    /// Returns the core in use afterwards.
    @discardableResult
    public static func preferWidestKernels() -> String {
        guard !done else { return coreName }
        done = true
        let env = ProcessInfo.processInfo.environment
        guard env["OPENBLAS_CORETYPE"] == nil, env["IDX_KEEP_BLAS_CORE"] == nil else { return coreName }
        guard let target = betterCore(than: coreName, flags: cpuFlags()) else { return coreName }
        // dlsym(nil, …) is RTLD_DEFAULT on Linux: every loaded library.
        guard let quit = dlsym(nil, "gotoblas_dynamic_quit"),
              let initialize = dlsym(nil, "gotoblas_dynamic_init") else { return coreName }
        typealias Fn = @convention(c) () -> Void
        setenv("OPENBLAS_CORETYPE", target, 1)
        unsafeBitCast(quit, to: Fn.self)()
        unsafeBitCast(initialize, to: Fn.self)()
        unsetenv("OPENBLAS_CORETYPE")  // child processes make their own choice
        return coreName
    }

    /// The CPU's feature flags (the first "flags" line of /proc/cpuinfo; empty if unreadable).
    static func cpuFlags() -> Set<String> {
        // /proc files report size 0: read to EOF rather than by size.
        guard let file = FileHandle(forReadingAtPath: "/proc/cpuinfo") else { return [] }
        defer { try? file.close() }
        let text = String(decoding: file.readDataToEndOfFile(), as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return [] }
        return Set(line.split(separator: " ").map(String.init))
    }
}
