import Foundation
import XCTest
import IdxParallel
@testable import IdxTrain

/// Runs the idx executable built next to the test bundle.
enum IdxExecutable {
    static func url() throws -> URL {
        let fm = FileManager.default
        var candidates = [Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent(),
                          Bundle(for: ParallelCommunicatorTests.self).bundleURL.deletingLastPathComponent()]
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        candidates += ["release", "debug"].map { root.appendingPathComponent(".build/\($0)") }
        for dir in candidates {
            let url = dir.appendingPathComponent("idx")
            if fm.isExecutableFile(atPath: url.path) { return url }
        }
        throw XCTSkip("the idx executable was not found next to the test bundle (\(candidates.map(\.path)))")
    }

    struct Result { var status: Int32; var stdout: String; var stderr: String; var seconds: Double }

    /// Runs idx with `arguments`; `input`, when given, is its standard input.
    static func run(_ arguments: [String], environment: [String: String] = [:], input: String? = nil) throws -> Result {
        let process = Process()
        process.executableURL = try url()
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        // The test itself may run under mpirun in CI; the child must not think it is a rank.
        for key in env.keys where key.hasPrefix("OMPI_COMM_WORLD") || key.hasPrefix("PMIX_") { env[key] = nil }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let inPipe = Pipe()
        if input != nil { process.standardInput = inPipe }
        let start = Date()
        try process.run()
        if let input {
            // Written beside the reads below, so that a long input cannot block on a full pipe.
            let writer = inPipe.fileHandleForWriting
            DispatchQueue.global().async { writer.write(Data(input.utf8)); try? writer.close() }
        }
        // Read both pipes concurrently so neither fills up.
        final class Box: @unchecked Sendable { var data = Data() }
        let errBox = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        let errData = errBox.data
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self), seconds: Date().timeIntervalSince(start))
    }

    static func requireMpirun() throws {
        guard MPILauncher.findMpirun() != nil else {
            throw XCTSkip("needs Open MPI's mpirun on PATH (apt-get install openmpi-bin libopenmpi-dev)")
        }
    }
}

final class ParallelCommunicatorTests: XCTestCase {
    func testEnvironmentDetection() {
        XCTAssertFalse(MPIEnvironment([:]).isLaunchedByMPI)
        XCTAssertFalse(MPIEnvironment(["PATH": "/bin", "OMPI_MCA_foo": "1"]).isLaunchedByMPI)
        let ompi = MPIEnvironment(["OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"])
        XCTAssertTrue(ompi.isLaunchedByMPI)
        XCTAssertEqual(ompi.rank, 1)
        XCTAssertEqual(ompi.size, 4)
        let pmix = MPIEnvironment(["PMIX_RANK": "3", "PMIX_NAMESPACE": "job"])
        XCTAssertTrue(pmix.isLaunchedByMPI)
        XCTAssertEqual(pmix.rank, 3)
    }

    func testSingleProcessCollectivesAreIdentity() throws {
        let comm = try Communicator.start(environment: MPIEnvironment([:]))
        XCTAssertFalse(comm.usesMPI)
        XCTAssertEqual(comm.rank, 0)
        XCTAssertEqual(comm.size, 1)
        var buffer: [Float] = [1, 2, 3]
        try comm.broadcast(&buffer)
        try comm.allreduceSum(&buffer)
        XCTAssertEqual(buffer, [1, 2, 3])
        XCTAssertEqual(try comm.allreduceSum(7), 7)
        XCTAssertEqual(try comm.allreduceSum(2.5), 2.5)
        var bytes: [UInt8] = [9, 8]
        try comm.broadcast(bytes: &bytes)
        XCTAssertEqual(bytes, [9, 8])
        try comm.barrier()
        comm.finalize()
    }

    func testSharesCoverTheBatchContiguously() {
        for size in 1 ... 5 {
            for count in [0, 1, 7, 32, 33] {
                let shares = (0 ..< size).map { Communicator.share(of: count, rank: $0, size: size) }
                XCTAssertEqual(shares.first?.lowerBound, 0)
                XCTAssertEqual(shares.last?.upperBound, count)
                for r in 1 ..< size { XCTAssertEqual(shares[r - 1].upperBound, shares[r].lowerBound) }
                let lengths = shares.map(\.count)
                XCTAssertLessThanOrEqual(lengths.max()! - lengths.min()!, 1)
            }
        }
    }

    func testLaunchPlan() {
        let plan = MPILauncher.plan(procs: 4, program: "/opt/idx", arguments: ["train", "--steps", "3"],
                                    mpirun: "/usr/bin/mpirun", environment: ["PATH": "/bin"], cores: 2, isRoot: true)
        XCTAssertEqual(plan.arguments, ["-np", "4", "--bind-to", "none", "--mca", "btl", "self,vader",
                                        "--mca", "mpi_yield_when_idle", "1", "-x", "OPENBLAS_NUM_THREADS", "--oversubscribe", "/opt/idx", "train", "--steps", "3"])
        XCTAssertEqual(plan.environment["OPENBLAS_NUM_THREADS"], "1")
        XCTAssertEqual(plan.environment["OMPI_ALLOW_RUN_AS_ROOT"], "1")
        XCTAssertEqual(plan.environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"], "1")
        let user = MPILauncher.plan(procs: 2, program: "/opt/idx", arguments: [], mpirun: "mpirun",
                                    environment: ["OPENBLAS_NUM_THREADS": "3"], cores: 2, isRoot: false)
        XCTAssertFalse(user.arguments.contains("--oversubscribe"))
        XCTAssertEqual(user.environment["OPENBLAS_NUM_THREADS"], "3")
        XCTAssertNil(user.environment["OMPI_ALLOW_RUN_AS_ROOT"])
        XCTAssertEqual(MPILauncher.removingProcsOption(["train", "--procs", "2", "--steps", "5", "--procs=3"]),
                       ["train", "--steps", "5"])
    }

    func testFailedRankIsReadFromMpirunReport() {
        let killed = "mpirun noticed that process rank 1 with PID 0 on node vm exited on signal 9 (Killed).\n"
        XCTAssertEqual(MPILauncher.failedRank(inMpirunOutput: killed)?.rank, 1)
        XCTAssertEqual(MPILauncher.failedRank(inMpirunOutput: killed)?.how, "was killed by signal 9 (Killed)")
        let exited = "The first process to do so was:\n\n  Process name: [[51966,1],3]\n  Exit code:    2\n"
        XCTAssertEqual(MPILauncher.failedRank(inMpirunOutput: exited)?.rank, 3)
        XCTAssertEqual(MPILauncher.failedRank(inMpirunOutput: exited)?.how, "exited with status 2")
        let own = "idx: rank 1 of 2: corpus x: bad shard\nMPI_ABORT was invoked on rank 1 in communicator"
        XCTAssertEqual(MPILauncher.failedRank(inMpirunOutput: own)?.rank, 1)
        XCTAssertEqual(MPILauncher.failedRank(inMpirunOutput: own)?.how, "failed: corpus x: bad shard")
        XCTAssertEqual(MPILauncher.failedRank(inMpirunOutput: "MPI_ABORT was invoked on rank 2 in communicator")?.rank, 2)
        XCTAssertNil(MPILauncher.failedRank(inMpirunOutput: "all fine"))
    }

    func testTwoRankCollectives() throws {
        try IdxExecutable.requireMpirun()
        let r = try IdxExecutable.run(["mpi-check", "--procs", "2", "--count", "1000003"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("mpi-check ok: ranks=2 floats=1000003 allreduce-sum-factor=3 selected=3"), r.stdout)
        XCTAssertTrue(r.stdout.contains("Open MPI"), r.stdout)
    }

    func testKilledRankEndsJobNamingTheRank() throws {
        try IdxExecutable.requireMpirun()
        let r = try IdxExecutable.run(["mpi-check", "--procs", "2", "--kill-rank", "1", "--count", "1000"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertLessThan(r.seconds, 20, "the job must end within seconds of a rank's death")
        XCTAssertTrue(r.stderr.contains("idx: the 2-rank job stopped (exit status 137): rank 1 was killed by signal 9"), r.stderr)
        XCTAssertFalse(r.stdout.contains("mpi-check ok"))
    }

    func testFailingRankAbortsTheJobWithItsMessage() throws {
        try IdxExecutable.requireMpirun()
        let r = try IdxExecutable.run(["mpi-check", "--procs", "2", "--fail-rank", "1", "--count", "1000"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("idx: rank 1 of 2: deliberate failure at round 10"), r.stderr)
        XCTAssertTrue(r.stderr.contains("idx: the 2-rank job stopped (exit status 1): rank 1 failed: deliberate failure at round 10."), r.stderr)
    }

    func testMissingMpirunSaysHowToInstall() throws {
        let r = try IdxExecutable.run(["mpi-check", "--procs", "2"], environment: ["IDX_MPIRUN": "/nonexistent/mpirun"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("mpirun was not found"), r.stderr)
        XCTAssertTrue(r.stderr.contains("apt-get install openmpi-bin libopenmpi-dev"), r.stderr)
        let train = try IdxExecutable.run(["train", "--procs", "2", "--corpus", "/nonexistent"], environment: ["IDX_MPIRUN": "/nonexistent/mpirun"])
        XCTAssertEqual(train.status, 1)
        XCTAssertTrue(train.stderr.contains("error: --procs 2: mpirun was not found on PATH"), train.stderr)
        XCTAssertTrue(train.stderr.contains("or run with --procs 1"), train.stderr)
        // One process still works without MPI.
        let one = try IdxExecutable.run(["mpi-check", "--procs", "1", "--count", "1000"], environment: ["IDX_MPIRUN": "/nonexistent/mpirun"])
        XCTAssertEqual(one.status, 0, one.stderr)
        XCTAssertTrue(one.stdout.contains("ranks=1"))
    }

    /// libmpi is opened with dlopen, so the binary starts on machines without Open MPI.
    func testExecutableDoesNotLinkLibmpi() throws {
        let ldd = "/usr/bin/ldd"
        guard FileManager.default.isExecutableFile(atPath: ldd) else { throw XCTSkip("needs ldd") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ldd)
        process.arguments = [try IdxExecutable.url().path]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertTrue(text.contains("libopenblas"), text)  // ldd did list the dependencies
        XCTAssertFalse(text.contains("libmpi"), text)
    }

    /// What ranks compare before training together changes with the corpus, options and step.
    func testSetupSummaryTellsDifferentRunsApart() throws {
        let a = try TinyTraining.trainer(), same = try TinyTraining.trainer()
        XCTAssertEqual(a.setupSummary, same.setupSummary)
        XCTAssertNotEqual(a.setupSummary, try TinyTraining.trainer(corpus: TinyTraining.corpus(seed: 6)).setupSummary)
        var o = TinyTraining.options(); o.lr = 1e-2
        XCTAssertNotEqual(a.setupSummary, try TinyTraining.trainer(o).setupSummary)
        let before = a.setupSummary
        _ = try a.trainStep()
        XCTAssertNotEqual(before, a.setupSummary)
        // one process: no check, nothing to send
        _ = try DataParallelExchange(a, communicator: Communicator.single())
    }
}
