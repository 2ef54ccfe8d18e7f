import ArgumentParser
import Foundation
import IdxCore

struct ProjectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "project",
        abstract: "Project embeddings to 2-D with PCA or t-SNE, to CSV (and an SVG scatter plot)."
    )

    enum Method: String, ExpressibleByArgument { case pca, tsne }

    @Option(help: "Projection method: pca or tsne.") var method: Method
    @Option(help: "Developer input: a raw little-endian float32 matrix file (rows × --dim).") var vectors: String?
    @Option(help: "Dimension of the rows of --vectors.") var dim: Int?
    @Option(help: "With --vectors: a file with one label (genre) per row, used for --genre, colours and the CSV.") var labels: String?
    @Option(help: "t-SNE perplexity (must be less than the number of points).") var perplexity: Double = 30
    @Option(help: "t-SNE iterations (the first 250 with early exaggeration 12).") var iterations: Int = 1000
    @Option(help: "Seed for --sample and for --init random.") var seed: UInt64 = 42
    @Option(help: "t-SNE initialisation: pca (scikit-learn's default) or random.") var initialization: String = "pca"
    @Option(help: "t-SNE gradient: auto (exact up to 1000 points), exact or barnes-hut.") var gradient: String = "auto"
    @Option(help: "Barnes-Hut accuracy θ (0 = exact repulsion).") var theta: Double = 0.5
    @Option(help: "Project a random sample of this many rows (after --genre).") var sample: Int?
    @Option(parsing: .upToNextOption, help: "Keep only rows of these genres.") var genre: [String] = []
    @Option(help: "Output CSV (id,title,year,genre,x,y).") var out: String
    @Option(help: "Also write an SVG scatter plot coloured by genre.") var svg: String?

    mutating func run() throws {
        do { try project() } catch let e as IdxError {
            FileHandle.standardError.write(Data("idx project: \(e.message)\n".utf8))
            throw ExitCode.failure
        }
    }

    func project() throws {
        guard let init_ = TSNEOptions.Initialization(rawValue: initialization) else {
            throw IdxError("--initialization must be pca or random, got \"\(initialization)\"")
        }
        guard let grad = TSNEOptions.Gradient(rawValue: gradient) else {
            throw IdxError("--gradient must be auto, exact or barnes-hut, got \"\(gradient)\"")
        }
        guard let vectors else {
            throw IdxError("give the embeddings with --vectors FILE --dim D (projecting an index with --index is not available in this build)")
        }
        guard let dim else { throw IdxError("--vectors needs --dim (the number of floats per row)") }
        let (all, count) = try ProjectionInput.readVectors(path: vectors, dim: dim)
        var genres = [String](repeating: "", count: count)
        if let labels {
            guard let text = try? String(contentsOfFile: labels, encoding: .utf8) else {
                throw IdxError("cannot read labels file \(labels) as UTF-8 text")
            }
            var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { String($0) }
            if lines.last == "" { lines.removeLast() }
            guard lines.count == count else {
                throw IdxError("\(labels) has \(lines.count) lines but \(vectors) has \(count) rows; give one label per row")
            }
            genres = lines
        } else if !genre.isEmpty {
            throw IdxError("--genre needs labels: give --labels FILE with --vectors")
        }
        let rows = try ProjectionInput.select(genres: genres, only: genre, sample: sample, seed: seed)
        let n = rows.count
        let x = rows.count == count ? all : ProjectionInput.gather(all, dim: dim, rows: rows)
        if n < 3 { throw IdxError("only \(n) row(s) selected; a projection needs at least 3") }

        let start = Date()
        var coords: [Float]
        var xLabel = "t-SNE 1", yLabel = "t-SNE 2", title: String
        switch method {
        case .pca:
            let pca = try PCA.fit(x, rows: n, dim: dim, components: min(2, dim))
            coords = pca.coordinates
            if pca.k == 1 { coords = coords.flatMap { [$0, 0] } }
            for (c, r) in pca.explainedVarianceRatio.enumerated() {
                print("PC\(c + 1) explained variance ratio \(String(format: "%.6f", r))")
            }
            xLabel = String(format: "PC1 (%.1f%% of variance)", 100 * pca.explainedVarianceRatio[0])
            yLabel = pca.k > 1 ? String(format: "PC2 (%.1f%% of variance)", 100 * pca.explainedVarianceRatio[1]) : "0"
            title = "PCA of \(n) embeddings"
        case .tsne:
            var o = TSNEOptions()
            o.perplexity = perplexity; o.iterations = iterations; o.seed = seed
            o.initialization = init_; o.gradient = grad; o.theta = theta
            let t0 = Date()
            let result = try TSNE.run(x, n: n, d: dim, options: o) { it, kl in
                FileHandle.standardError.write(Data(String(format: "t-SNE: iteration %d/%d, KL divergence %.4f (%.1f s)\n",
                                                          it, o.iterations, kl, Date().timeIntervalSince(t0)).utf8))
            }
            coords = result.embedding
            title = "t-SNE of \(n) embeddings (perplexity \(Progress.compact(perplexity)))"
            FileHandle.standardError.write(Data(String(format: "t-SNE: %@ gradient, final KL divergence %.4f after %d iterations\n",
                                                      result.usedExact ? "exact" : "Barnes-Hut", result.klDivergence, result.iterations).utf8))
        }
        let seconds = Date().timeIntervalSince(start)

        var csv = CSVExport.line(["id", "title", "year", "genre", "x", "y"])
        for (r, i) in rows.enumerated() {
            csv += CSVExport.line([String(i), "", "", genres[i], CSVExport.number(coords[2 * r]), CSVExport.number(coords[2 * r + 1])])
        }
        try AtomicFile.createParent(of: out)
        try AtomicFile.write(Data(csv.utf8), to: out)
        if let svg {
            let plot = ScatterPlot(x: (0 ..< n).map { coords[2 * $0] }, y: (0 ..< n).map { coords[2 * $0 + 1] },
                                   groups: rows.map { genres[$0].isEmpty ? "(no label)" : genres[$0] },
                                   title: title, xLabel: xLabel, yLabel: yLabel)
            try AtomicFile.createParent(of: svg)
            try AtomicFile.write(Data(plot.svg().utf8), to: svg)
        }
        Progress("project", unit: "points").finish(String(format: "project: %d points, %@ in %.2f s -> %@%@", n, method.rawValue, seconds, out, svg.map { " + " + $0 } ?? ""))
    }
}
