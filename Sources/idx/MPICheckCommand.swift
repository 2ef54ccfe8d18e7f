import ArgumentParser
import Foundation
import IdxBase
import IdxParallel

/// Hidden self-test of the MPI layer, run by the tests under mpirun:
/// broadcast, allreduce (large float buffer, scalars), barrier, and on
/// request a rank that kills itself or fails, to check fault handling.
struct MPICheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mpi-check",
        abstract: "Check the MPI layer (broadcast, allreduce, faults) on N ranks.",
        shouldDisplay: false)

    @Option(help: "Ranks to launch through mpirun on this machine.") var procs = 1
    @Option(help: "Floats in the allreduce buffer.") var count = 3_000_000
    @Option(help: "Allreduce rounds (a fault is injected half-way).") var rounds = 20
    @Option(help: "This rank sends itself SIGKILL half-way through the rounds.") var killRank: Int?
    @Option(help: "This rank fails half-way through the rounds (IdxError -> MPI_Abort).") var failRank: Int?

    func run() throws {
        if procs > 1 && !MPIEnvironment().isLaunchedByMPI {
            throw ExitCode(try MPILauncher.run(procs: procs, arguments: Array(CommandLine.arguments.dropFirst())))
        }
        let comm = try Communicator.start()
        do {
            try check(comm)
        } catch {
            comm.abort("\(error)")
        }
        comm.finalize()
    }

    private func check(_ comm: Communicator) throws {
        let n = comm.size
        // Broadcast: only rank 0 holds the weights.
        var weights = [Float](repeating: 0, count: count)
        if comm.isRoot { for i in 0 ..< count { weights[i] = Float(i % 4099) * 0.25 } }
        try comm.broadcast(&weights)
        for i in 0 ..< count where weights[i] != Float(i % 4099) * 0.25 {
            throw IdxError("broadcast: element \(i) is \(weights[i])")
        }
        var text = comm.isRoot ? Array("config from rank 0 of \(n)".utf8) : []
        try comm.broadcast(bytes: &text)
        guard String(decoding: text, as: UTF8.self) == "config from rank 0 of \(n)" else {
            throw IdxError("byte broadcast gave \(String(decoding: text, as: UTF8.self))")
        }
        // Allreduce: rank r contributes (r+1)·(i mod 1000); small integers, exact in Float.
        var gradients = [Float](repeating: 0, count: count)
        for i in 0 ..< count { gradients[i] = Float(comm.rank + 1) * Float(i % 1000) }
        try comm.allreduceSum(&gradients)
        let factor = Float(n * (n + 1) / 2)
        for i in 0 ..< count where gradients[i] != factor * Float(i % 1000) {
            throw IdxError("allreduce: element \(i) is \(gradients[i]), expected \(factor * Float(i % 1000))")
        }
        // Time the big allreduce (the per-step cost of averaging gradients).
        try comm.barrier()
        let repeats = 5
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0 ..< repeats { try comm.allreduceSum(&gradients) }
        let allreduceMs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6 / Double(repeats)
        let selected = try comm.allreduceSum(comm.rank + 1)
        let loss = try comm.allreduceSum(Double(comm.rank) + 0.5)
        let maxRank = try comm.allreduceMax(Double(comm.rank))
        guard selected == n * (n + 1) / 2, loss == Double(n * (n - 1)) / 2 + 0.5 * Double(n), maxRank == Double(n - 1)
        else { throw IdxError("scalar allreduce: \(selected) \(loss) \(maxRank)") }
        try comm.barrier()

        // Rounds of a small allreduce, like training steps; faults are injected half-way.
        var step = [Float](repeating: 1, count: 1024)
        for round in 0 ..< rounds {
            if round == rounds / 2 {
                if killRank == comm.rank { kill(getpid(), SIGKILL) }
                if failRank == comm.rank { throw IdxError("deliberate failure at round \(round)") }
            }
            try comm.allreduceSum(&step)
            for i in step.indices { step[i] /= Float(n) }
            usleep(20_000)
        }
        if comm.isRoot {
            let library = comm.usesMPI ? Communicator.libraryVersion() : "no MPI"
            print("mpi-check ok: ranks=\(n) floats=\(count) allreduce-sum-factor=\(Int(factor)) selected=\(selected) rounds=\(rounds) allreduce-ms=\(String(format: "%.2f", allreduceMs)) library=\(library)")
        }
    }
}
