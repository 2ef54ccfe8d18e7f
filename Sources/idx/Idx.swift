import ArgumentParser
import IdxModel

@main
struct Idx: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idx",
        abstract: "Turn corpora of movie synopses into a searchable, plottable embedding index.",
        version: "0.1.0",
        subcommands: [
            IngestCommand.self,
            TrainCommand.self,
            IndexCommand.self, SearchCommand.self,
            EvalCommand.self, NightlyCommand.self,
            MPICheckCommand.self,
            ProjectCommand.self,
            ServeCommand.self,
        ]
    )

    /// Every command, before any BLAS work: OpenBLAS's kernels as wide as the CPU runs
    /// (BLASRuntime: an unknown CPU otherwise gets its SSE3 fallback).
    static func main() async {
        BLASRuntime.preferWidestKernels()
        await main(nil)
    }
}
