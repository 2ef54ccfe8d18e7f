import ArgumentParser
import Foundation
import IdxProjection

extension ProjectionMethod: ExpressibleByArgument {}
extension TSNEOptions.Initialization: ExpressibleByArgument {}
extension TSNEOptions.Gradient: ExpressibleByArgument {}

struct ProjectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "project",
        abstract: "Project embeddings to 2-D with PCA or t-SNE, to CSV (and an SVG scatter plot)."
    )

    @Option(help: "Projection method: pca or tsne.") var method: ProjectionMethod
    @Option(help: "Index folder to project (default indexes/movies); with --texts, the index whose model embeds them.") var index: String?
    @Option(help: "Developer input: a raw little-endian float32 matrix file (rows × --dim).") var vectors: String?
    @Option(name: .customLong("dim"), help: "Dimension of the rows of --vectors.") var dim_: Int?
    @Option(help: "With --vectors: a file with one label (genre) per row, used for --genre, colours and the CSV.") var labels: String?
    @Option(help: "Embed and project the lines of this file (text, optionally TAB label) with --model.") var texts: String?
    @Option(help: "The model directory (models/<name>) that embeds --texts (default: the index's model) or --corpus.") var model: String?
    @Option(help: "Embed (with --model) and project the documents of this ingested corpus folder.") var corpus: String?
    @Option(help: "Developer: also write the projected rows' vectors as a raw float32 matrix (e.g. for scripts/bench-project).") var saveVectors: String?
    @Option(help: "t-SNE perplexity (must be less than the number of points).") var perplexity: Double = 30
    @Option(help: "t-SNE iterations (the first 250 with early exaggeration 12).") var iterations: Int = 1000
    @Option(help: "Seed for --sample and for --init random.") var seed: UInt64 = 42
    @Option(help: "t-SNE initialisation: pca (scikit-learn's default) or random.") var initialization = TSNEOptions.Initialization.pca
    @Option(help: "t-SNE gradient: auto (exact up to 1000 points), exact or barnes-hut.") var gradient = TSNEOptions.Gradient.auto
    @Option(help: "Barnes-Hut accuracy θ (0 = exact repulsion).") var theta: Double = 0.5
    @Option(help: "Project a random sample of this many rows (after --genre).") var sample: Int?
    @Option(parsing: .upToNextOption, help: "Keep only rows of these genres.") var genre: [String] = []
    @Option(help: "Output CSV (id,title,year,genre,x,y; text,label,x,y with --texts).") var out: String?
    @Flag(help: "Store the projection inside the index's current generation (the map idx serve draws).") var attach = false
    @Option(help: "Also write an SVG scatter plot coloured by genre.") var svg: String?
    @Option(help: ArgumentHelp("Developer (scripts/bench-project): after the timed first PCA, fit it this many more times and print the warm times.", visibility: .hidden)) var warmRepeats: Int = 0

    mutating func run() throws {
        try reportingErrors(prefix: "idx project: ") {
            var p = Projector(method: method)
            p.index = index
            p.vectors = vectors
            p.dim_ = dim_
            p.labels = labels
            p.texts = texts
            p.model = model
            p.corpus = corpus
            p.saveVectors = saveVectors
            p.perplexity = perplexity
            p.iterations = iterations
            p.seed = seed
            p.initialization = initialization
            p.gradient = gradient
            p.theta = theta
            p.sample = sample
            p.genre = genre
            p.out = out
            p.attach = attach
            p.svg = svg
            p.warmRepeats = warmRepeats
            for line in try p.run() { print(line) }
        }
    }
}
