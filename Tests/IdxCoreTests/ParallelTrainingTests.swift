import Foundation
import XCTest
import IdxCorpus
import IdxModel
import IdxTrain

/// `idx train` over two MPI ranks against one process, and a rank killed mid-run.
/// Runs the idx executable on the committed sample corpus (corpora/sample/movies.csv).
final class ParallelTrainingTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var work: URL!

    override func setUpWithError() throws {
        try IdxExecutable.requireMpirun()
        work = FileManager.default.temporaryDirectory.appendingPathComponent("idx-parallel-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let csv = Self.root.appendingPathComponent("corpora/sample/movies.csv").path
        let r = try IdxExecutable.run(["ingest", csv, "--out", corpus])
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    override func tearDownWithError() throws {
        if let work { try? FileManager.default.removeItem(at: work) }
    }

    var corpus: String { work.appendingPathComponent("corpus").path }

    static func losses(_ modelDir: String) throws -> [Int: Double] {
        let text = try String(contentsOfFile: modelDir + "/train-log.csv", encoding: .utf8)
        var out: [Int: Double] = [:]
        for line in text.split(separator: "\n").dropFirst() {
            let f = line.split(separator: ",")
            out[Int(f[0])!] = Double(f[1])!
        }
        return out
    }

    func testTwoRanksEqualOneRankFor20Steps() throws {
        let one = work.appendingPathComponent("one").path, two = work.appendingPathComponent("two").path
        let common = ["train", "--corpus", corpus, "--steps", "20", "--checkpoint-every", "10"]
        // One rank with two worker threads splits the global batch into the same two halves as two
        // ranks do. (With one thread the batch's gradient is summed in another order; over 20 AdamW
        // steps on whole documents (the default --max-len 64) that rounding moved rare words'
        // embedding rows by up to 8e-3 here, against 3e-5 at 32 tokens: Adam's normalised step
        // amplifies noise on near-zero gradients. Two ranks and two threads gave the same bits.)
        let r1 = try IdxExecutable.run(common + ["--out", one, "--threads", "2"])
        XCTAssertEqual(r1.status, 0, r1.stderr)
        let r2 = try IdxExecutable.run(common + ["--out", two, "--procs", "2"])
        XCTAssertEqual(r2.status, 0, r2.stderr)
        XCTAssertTrue(r2.stderr.contains("× 2 ranks"), r2.stderr)

        // The default recipe ends contrastive (its last seventh, 3 of 20 steps): those steps
        // gather every rank's embeddings for one InfoNCE loss, and must match one rank too.
        struct State: Decodable { var options: TrainOptions }
        let state = try JSONDecoder().decode(State.self, from: Data(contentsOf: URL(fileURLWithPath: two + "/state.json")))
        XCTAssertEqual(state.options.contrastive?.steps, 3)
        XCTAssertEqual(state.options.contrastive?.pairs, .span)
        let l1 = try Self.losses(one), l2 = try Self.losses(two)
        XCTAssertEqual(Set(l1.keys), Set(1 ... 20))
        XCTAssertEqual(Set(l2.keys), Set(1 ... 20), "rank 0 alone writes the log, one row a step")
        for step in 1 ... 20 {
            let a = l1[step]!, b = l2[step]!
            XCTAssertLessThanOrEqual(abs(a - b) / abs(a), 1e-4, "step \(step): loss \(a) with 1 rank, \(b) with 2")
        }
        let w1 = try SafeTensors.read(path: one + "/model.safetensors")
        let w2 = try SafeTensors.read(path: two + "/model.safetensors")
        XCTAssertEqual(w1.order, w2.order)
        XCTAssertEqual(w1.metadata["step"] ?? "20", w2.metadata["step"] ?? "20")
        // The key part of in_proj_bias (rows C..<2C) has an analytically zero gradient (softmax
        // ignores a constant added to every score), so its computed gradient is rounding noise,
        // which Adam's normalised step turns into moves of up to lr per step in both runs alike:
        // a different summation order (two halves of the batch) gives different noise. It is
        // checked on its own, against that bound; every other weight must agree within 1e-4.
        var worst = 0.0, worstName = "", worstKeyBias = 0.0
        for name in w1.order {
            let a = w1.tensors[name]!.data, b = w2.tensors[name]!.data
            XCTAssertEqual(a.count, b.count)
            let keyBias = name.hasSuffix("self_attn.in_proj_bias") ? a.count / 3 ..< 2 * a.count / 3 : 0 ..< 0
            for i in a.indices {
                let d = Double(abs(a[i] - b[i]))
                if keyBias.contains(i) { worstKeyBias = max(worstKeyBias, d) }
                else if d > worst { worst = d; worstName = name }
            }
        }
        XCTAssertLessThanOrEqual(worst, 1e-4, "largest weight difference \(worst) in \(worstName)")
        XCTAssertLessThanOrEqual(worstKeyBias, 20 * 1e-3 / 4, "key-bias difference \(worstKeyBias)")
        // the weights moved: the comparison is not between two untouched inits
        let init0 = try Trainer(config: try Self.config(one), options: TrainOptions(), corpus: TokenizedCorpus(tokens: [5, 6], offsets: [0, 2]),
                                tokenizerHash: "0")
        XCTAssertNotEqual(Array(init0.parameters.prefix(1000)), Array(w2.tensors[w2.order[0]]!.data.prefix(1000)))

        // The same-host ranks above shared their weights and gradients in memory; message
        // passing (ranks on several hosts, here forced with IDX_MPI_SHARED=0) gives the same bits.
        let messages = work.appendingPathComponent("messages").path
        let r3 = try IdxExecutable.run(common + ["--out", messages, "--procs", "2"], environment: ["IDX_MPI_SHARED": "0"])
        XCTAssertEqual(r3.status, 0, r3.stderr)
        XCTAssertTrue(r2.stderr.contains("in shared memory"), r2.stderr)
        XCTAssertTrue(r3.stderr.contains("by message passing"), r3.stderr)
        XCTAssertEqual(try Self.losses(messages), l2)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: messages + "/model.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: two + "/model.safetensors")))
    }

    static func config(_ modelDir: String) throws -> ModelConfig {
        struct State: Decodable { var config: ModelConfig }
        return try JSONDecoder().decode(State.self, from: Data(contentsOf: URL(fileURLWithPath: modelDir + "/state.json"))).config
    }

    /// The pid of rank `rank` of a job whose command line mentions `marker`.
    static func rankPid(_ rank: Int, marker: String) -> pid_t? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for e in entries {
            guard let pid = pid_t(e),
                  let cmd = FileManager.default.contents(atPath: "/proc/\(e)/cmdline"),
                  String(decoding: cmd, as: UTF8.self).contains(marker),
                  !String(decoding: cmd, as: UTF8.self).contains("mpirun"),
                  let env = FileManager.default.contents(atPath: "/proc/\(e)/environ") else { continue }
            if env.split(separator: 0).contains(where: { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=\(rank)" }) {
                return pid
            }
        }
        return nil
    }

    func testKilledRankEndsJobAndLastCheckpointResumes() throws {
        let out = work.appendingPathComponent("killed").path
        let process = Process()
        process.executableURL = try IdxExecutable.url()
        process.arguments = ["train", "--corpus", corpus, "--out", out, "--steps", "2000", "--checkpoint-every", "3", "--procs", "2"]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        final class Box: @unchecked Sendable { var data = Data() }
        let errBox = Box()
        let reader = DispatchGroup()
        reader.enter()
        try process.run()
        DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); reader.leave() }

        // wait for a first checkpoint, then kill rank 1
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: out + "/state.json") && Date() < deadline && process.isRunning {
            usleep(50_000)
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/state.json"), "no checkpoint within 60 s")
        guard let victim = Self.rankPid(1, marker: out) else {
            process.terminate(); process.waitUntilExit()
            return XCTFail("rank 1 of the job was not found")
        }
        let killedAt = Date()
        kill(victim, SIGKILL)
        process.waitUntilExit()
        let seconds = Date().timeIntervalSince(killedAt)
        reader.wait()
        let stderr = String(decoding: errBox.data, as: UTF8.self)

        XCTAssertNotEqual(process.terminationStatus, 0, stderr)
        XCTAssertLessThan(seconds, 15, "the job must end within seconds of a rank's death")
        XCTAssertTrue(stderr.contains("rank 1 was killed by signal 9"), stderr)

        // the published checkpoint is whole: its files match state.json's checksums
        let tokens = try CorpusReader(directory: corpus)
        let (trainer, _, _) = try Trainer.resume(directory: out, corpus: tokens.readTokens(), tokenizerHash: tokens.tokenizerHash, corpusPath: corpus)
        XCTAssertGreaterThan(trainer.step, 0)
        XCTAssertEqual(trainer.step % 3, 0)
        XCTAssertLessThan(trainer.step, 2000)
        let files = try FileManager.default.contentsOfDirectory(atPath: out).sorted()
        XCTAssertEqual(files, ["model.safetensors", "optimizer.safetensors", "state.json", "tokenizer.json", "train-log.csv"])
        // beside it at most a hidden staging folder (".killed.tmp-…") of a write the kill interrupted
        for entry in try FileManager.default.contentsOfDirectory(atPath: work.path) where !["corpus", "killed"].contains(entry) {
            XCTAssertTrue(entry.hasPrefix(".killed.tmp-"), "unexpected \(entry) next to the checkpoint")
        }

        // --resume continues on two ranks from there
        let target = trainer.step + 2
        let resumed = try IdxExecutable.run(["train", "--corpus", corpus, "--out", out, "--resume", "--steps", "\(target)", "--procs", "2"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("resuming \(out) at step \(trainer.step)"), resumed.stderr)
        let final = try Trainer.resume(directory: out, corpus: tokens.readTokens(), tokenizerHash: tokens.tokenizerHash, corpusPath: corpus)
        XCTAssertEqual(final.trainer.step, target)
        XCTAssertEqual(Set(try Self.losses(out).keys), Set(1 ... target))
    }
}
