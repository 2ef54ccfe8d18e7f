import ArgumentParser
import Foundation
import IdxBase
import IdxNightly

struct NightlyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nightly",
        abstract: "The scheduled job: ingest new inbox files, continue training, index, evaluate, publish if the gate holds.",
        discussion: """
        Settings come from --config (default: idx.toml when present; every key is documented in \
        idx.example.toml), and each flag below overrides its key. A run with nothing new does nothing \
        and exits 0. A lock keeps two runs apart; a run killed at any point is finished by the next. \
        Exit status: 0 published or nothing new, 2 the gate failed (the published index keeps serving), \
        1 an error. Each run writes a JSON report under the runs folder. See docs/nightly.md.
        """
    )

    @Option(help: "Config file (TOML; default: idx.toml if it exists).") var config: String?
    @Option(help: "Inbox source: folder, CSV file or http(s) URL (repeatable; replaces [inbox] sources).") var inbox: [String] = []
    @Option(help: "[paths] corpus") var corpus: String?
    @Option(help: "[paths] model") var model: String?
    @Option(help: "[paths] index") var index: String?
    @Option(help: "[paths] runs") var runs: String?
    @Option(help: "[paths] state") var state: String?
    @Option(parsing: .unconditional, help: "[train] steps") var steps: Int?
    @Flag(help: "[train] from_scratch: train a new model instead of continuing.") var fromScratch = false
    @Option(help: "[train] procs") var procs: Int?
    @Option(help: "[train] seed") var seed: Int?
    @Option(help: "[train] vocab_size") var vocabSize: Int?
    @Option(help: "[train] args: one extra flag for idx train (repeatable).") var trainArg: [String] = []
    @Option(help: "[eval] validation CSV (\"\" = leave-one-out on the index).") var validation: String?
    @Option(help: "[eval] seed_test") var seedTest: String?
    @Option(parsing: .unconditional, help: "[eval] k") var k: Int?  // unconditional: `--k -5` is a value, refused with a clear message
    @Option(help: "[gate] max_knn_drop") var maxKnnDrop: Double?
    @Option(help: "[gate] min_seed_ratio") var minSeedRatio: Double?
    @Option(help: "[download] attempts") var downloadAttempts: Int?
    @Option(help: "[download] timeout_seconds") var downloadTimeout: Double?
    @Option(help: "[inbox] max_file_bytes: largest inbox file or download accepted.") var maxFileBytes: Int64?
    @Flag(help: "[inbox] follow_symlinks: accept symbolic links among inbox folders' entries.") var followSymlinks = false
    @Option(help: "[download] max_seconds: longest one download may take in all.") var downloadMaxSeconds: Double?
    @Option(help: "[map] projection: none, pca or tsne") var mapProjection: String?
    @Flag(help: "Train, index and evaluate even when the inbox holds nothing new (e.g. after a failed gate).") var retrain = false
    @Flag(help: "Print what is published, any interrupted run and the quarantined inbox files, then exit.") var status = false
    @Flag(help: "Move the quarantined inbox files back to where they came from (downloads are fetched again), then exit.") var retryQuarantined = false

    func resolvedConfig() throws -> NightlyConfig {
        var c = NightlyConfig()
        if let path = config {
            c = try NightlyConfig.load(path)
        } else if FileManager.default.fileExists(atPath: "idx.toml") {
            c = try NightlyConfig.load("idx.toml")
        }
        // Each flag given is checked and stored as its key of idx.toml is (NightlySettings).
        let given: [(String, NightlySettingValue?)] = [
            ("--inbox", inbox.isEmpty ? nil : .strings(inbox)), ("--corpus", corpus.map { .string($0) }),
            ("--model", model.map { .string($0) }), ("--index", index.map { .string($0) }), ("--runs", runs.map { .string($0) }),
            ("--state", state.map { .string($0) }), ("--steps", steps.map { .integer($0) }),
            ("--from-scratch", fromScratch ? .bool(true) : nil), ("--procs", procs.map { .integer($0) }),
            ("--seed", seed.map { .integer($0) }), ("--vocab-size", vocabSize.map { .integer($0) }),
            ("--train-arg", trainArg.isEmpty ? nil : .strings(trainArg)), ("--validation", validation.map { .string($0) }),
            ("--seed-test", seedTest.map { .string($0) }), ("--k", k.map { .integer($0) }),
            ("--max-knn-drop", maxKnnDrop.map { .number($0) }), ("--min-seed-ratio", minSeedRatio.map { .number($0) }),
            ("--download-attempts", downloadAttempts.map { .integer($0) }), ("--download-timeout", downloadTimeout.map { .number($0) }),
            ("--max-file-bytes", maxFileBytes.map { .integer(Int($0)) }), ("--follow-symlinks", followSymlinks ? .bool(true) : nil),
            ("--download-max-seconds", downloadMaxSeconds.map { .number($0) }), ("--map-projection", mapProjection.map { .string($0) }),
        ]
        for case let (flag, value?) in given { try NightlySettings.set(flag, value, in: &c) }
        return c
    }

    func run() throws {
        try reportingErrors {
            let c = try resolvedConfig()
            let log: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
            let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            let job = NightlyJob(config: c, stages: .standard(idx: exe, log: log), log: log)
            if status { print(try job.status()); return }
            if retryQuarantined {
                let lines = try job.retryQuarantined()
                print(lines.isEmpty ? "nothing is quarantined" : lines.joined(separator: "\n"))
                return
            }
            let report = try job.run(forceTrain: retrain)
            print("\(report.decision.rawValue): \(report.message)")
            print("report: \(report.reportPath)")
            if report.decision == .rejected { throw ExitCode(2) }
        }
    }
}
