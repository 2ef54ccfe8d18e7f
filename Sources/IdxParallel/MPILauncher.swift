import COpenBLAS
import Foundation
import IdxBase
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `--procs N` on one machine: re-executes this same binary as N ranks under
/// Open MPI's `mpirun`, forwarding the arguments, passing the output through,
/// and returning the job's exit status. The ranks see the launcher's
/// environment (OMPI_COMM_WORLD_SIZE, …) and join the job; they never launch again.
public enum MPILauncher {
    public static let installAdvice =
        "Multi-process training needs Open MPI: on Debian/Ubuntu `apt-get install openmpi-bin libopenmpi-dev` "
        + "(scripts/setup.sh does it), on macOS `brew install open-mpi`; or run with --procs 1"

    /// What to execute: mpirun, its arguments, and the environment for the job.
    public struct Plan: Equatable {
        public var mpirun: String
        public var arguments: [String]
        public var environment: [String: String]
    }

    /// Builds the mpirun command line for `procs` local ranks of `program arguments…`.
    /// - Each rank gets one BLAS thread unless OPENBLAS_NUM_THREADS is already set
    ///   (or `blasThreads` says otherwise): N ranks × 1 thread use N cores.
    /// - `--bind-to none`: containers often hide cores from Open MPI's binding.
    /// - `--mca btl self,vader`: one machine, shared memory; no network probing.
    /// - `--mca mpi_yield_when_idle 1`: a rank waiting in a collective yields its core instead of
    ///   spinning, which matters when the machine is shared (a spinning rank steals the CPU the
    ///   rank it waits for needs); on an idle machine sched_yield returns at once.
    /// - `--oversubscribe` when asking for more ranks than cores.
    /// - root (containers, CI) needs OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM).
    public static func plan(procs: Int, program: String, arguments: [String], mpirun: String,
                            environment: [String: String], blasThreads: Int? = nil,
                            cores: Int = Cores.available,
                            isRoot: Bool = getuid() == 0) -> Plan {
        var env = environment
        if let threads = blasThreads { env["OPENBLAS_NUM_THREADS"] = String(threads) }
        else if env["OPENBLAS_NUM_THREADS"] == nil { env["OPENBLAS_NUM_THREADS"] = "1" }
        if isRoot {
            env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
            env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        }
        var args = ["-np", String(procs), "--bind-to", "none", "--mca", "btl", "self,vader",
                    "--mca", "mpi_yield_when_idle", "1", "-x", "OPENBLAS_NUM_THREADS"]
        if procs > cores { args.append("--oversubscribe") }
        args.append(program)
        args += arguments
        return Plan(mpirun: mpirun, arguments: args, environment: env)
    }

    /// `IDX_MPIRUN` if set, else the first `mpirun` on PATH.
    public static func findMpirun(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let explicit = environment["IDX_MPIRUN"], !explicit.isEmpty {
            return FileManager.default.isExecutableFile(atPath: explicit) ? explicit : nil
        }
        for dir in (environment["PATH"] ?? "").split(separator: ":") {
            let candidate = "\(dir)/mpirun"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// The running executable (so the ranks run exactly this build).
    public static func currentExecutable() -> String {
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return path }
        return CommandLine.arguments[0]
    }

    /// `arguments` without `--procs N` / `--procs=N` (the ranks must not launch again).
    public static func removingProcsOption(_ arguments: [String]) -> [String] {
        var out: [String] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if a == "--procs" { i += 2; continue }
            if a.hasPrefix("--procs=") { i += 1; continue }
            out.append(a); i += 1
        }
        return out
    }

    /// Runs `procs` ranks of this binary with `arguments` (CommandLine.arguments
    /// minus the program name and `--procs`) and returns the job's exit status
    /// (128 + signal when mpirun itself was killed). When a rank dies, mpirun
    /// stops the others; this adds one line naming the rank.
    public static func run(procs: Int, arguments: [String], blasThreads: Int? = nil,
                           failureNote: String = "",
                           environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Int32 {
        guard procs >= 1 else { throw IdxError("--procs must be at least 1 (got \(procs))") }
        guard let mpirun = findMpirun(environment: environment) else {
            throw IdxError("--procs \(procs): mpirun was not found on PATH. \(installAdvice)")
        }
        try Communicator.loadLibrary()   // the ranks will need libmpi: fail here, clearly, if it is missing
        let plan = plan(procs: procs, program: currentExecutable(), arguments: removingProcsOption(arguments),
                        mpirun: mpirun, environment: environment, blasThreads: blasThreads)
        let (status, output) = try spawnPassingStderr(plan)
        if status != 0 {
            let who = failedRank(inMpirunOutput: output).map { "rank \($0.rank) \($0.how)" } ?? "a rank failed"
            FileHandle.standardError.write(Data(
                "idx: the \(procs)-rank job stopped (exit status \(status)): \(who)\(who.hasSuffix(".") ? "" : ".")\(failureNote.isEmpty ? "" : " " + failureNote)\n".utf8))
        }
        return status
    }

    /// Reads which rank ended the job from mpirun's report, e.g.
    /// "mpirun noticed that process rank 1 with PID 42 on node n exited on signal 9 (Killed)."
    /// or the "Process name: [[51966,1],1]  Exit code: 3" block.
    public static func failedRank(inMpirunOutput text: String) -> (rank: Int, how: String)? {
        if let r = text.range(of: #"process rank (\d+) with PID \d+ on node \S+ exited on signal (\d+)( \([^)]*\))?"#,
                              options: .regularExpression) {
            let fields = text[r].split(separator: " ")
            let rank = Int(fields[2]) ?? -1
            let signal = text[r].components(separatedBy: "signal ").last ?? ""
            return (rank, "was killed by signal \(signal)")
        }
        // The rank's own last words (Communicator.abort): "idx: rank 1 of 2: <message>".
        if let r = text.range(of: #"idx: rank (\d+) of \d+: [^\n]*"#, options: .regularExpression) {
            let line = String(text[r])
            let rank = Int(line.split(separator: " ")[2]) ?? -1
            let message = line.components(separatedBy: ": ").dropFirst(2).joined(separator: ": ")
            return (rank, "failed: \(message)")
        }
        if let r = text.range(of: #"Process name: \[\[\d+,\d+\],(\d+)\]\s+Exit code:\s+(\d+)"#, options: .regularExpression) {
            let s = String(text[r])
            let rank = Int(s.components(separatedBy: "],").last!.prefix { $0.isNumber }) ?? -1
            let code = s.components(separatedBy: "Exit code:").last!.trimmingCharacters(in: .whitespaces)
            return (rank, "exited with status \(code)")
        }
        if let r = text.range(of: #"MPI_ABORT was invoked on rank (\d+)"#, options: .regularExpression) {
            let rank = Int(text[r].split(separator: " ")[5]) ?? -1
            return (rank, "called MPI_Abort")
        }
        return nil
    }

    /// posix_spawn of mpirun with stdout inherited and stderr read through a pipe
    /// (copied to our stderr as it arrives; the tail kept to name a failed rank).
    /// SIGINT is ignored here meanwhile: Ctrl-C reaches mpirun (same process
    /// group), which stops the ranks and exits; we then report its status.
    static func spawnPassingStderr(_ plan: Plan) throws -> (Int32, String) {
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else { throw IdxError("cannot create a pipe for mpirun: \(String(cString: strerror(errno)))") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 2)
        posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
        posix_spawn_file_actions_addclose(&actions, pipeFDs[1])
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults); sigaddset(&defaults, SIGINT); sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF))

        let argv = ([plan.mpirun] + plan.arguments).map { strdup($0) } + [nil]
        let envp = plan.environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        let previous = signal(SIGINT, SIG_IGN)
        defer { signal(SIGINT, previous) }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, plan.mpirun, &actions, &attributes, argv, envp)
        close(pipeFDs[1])
        guard rc == 0 else {
            close(pipeFDs[0])
            throw IdxError("cannot start \(plan.mpirun): \(String(cString: strerror(rc)))")
        }
        var tail = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(pipeFDs[0], $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            chunk.withUnsafeBytes { _ = write(2, $0.baseAddress, n) }
            tail += chunk[0 ..< n]
            if tail.count > 1 << 20 { tail.removeFirst(tail.count - (1 << 19)) }
        }
        close(pipeFDs[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exitStatus: Int32
        if status & 0x7f == 0 { exitStatus = (status >> 8) & 0xff }      // WIFEXITED → WEXITSTATUS
        else { exitStatus = 128 + (status & 0x7f) }                         // WTERMSIG
        return (exitStatus, String(decoding: tail, as: UTF8.self))
    }

    /// Inside a rank started by an MPI launcher: one BLAS thread unless the
    /// user said otherwise (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS), so that
    /// ranks do not fight over cores.
    public static func configureRankThreads(environment: [String: String] = ProcessInfo.processInfo.environment) {
        if environment["OPENBLAS_NUM_THREADS"] == nil && environment["OMP_NUM_THREADS"] == nil {
            openblas_set_num_threads(1)
        }
    }
}
