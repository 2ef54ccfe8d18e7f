import Foundation
import IdxBase
import IdxCorpus
import IdxModel
import IdxStore

/// `idx project` without its command line: 2-D PCA or t-SNE of an index's vectors, of a
/// corpus embedded with a model, of lines of text embedded as queries, or of raw float32 rows;
/// written as CSV, an SVG scatter plot, or attached to the index's generation.
public struct Projector {
    public var method: ProjectionMethod
    /// Inputs: an index (the default), or --corpus with --model, --texts (with the index's model
    /// or --model), or raw --vectors of --dim with optional --labels.
    public var index: String?
    public var vectors: String?
    public var dim_: Int?
    public var labels: String?
    public var texts: String?
    public var model: String?
    public var corpus: String?
    public var saveVectors: String?
    public var perplexity: Double = 30
    public var iterations: Int = 1000
    public var seed: UInt64 = 42
    public var initialization = TSNEOptions.Initialization.pca
    public var gradient = TSNEOptions.Gradient.auto
    public var theta: Double = 0.5
    public var sample: Int?
    public var genre: [String] = []
    public var out: String?
    public var attach = false
    public var svg: String?
    /// Developer (scripts/bench-project): PCA fits repeated after the timed one.
    public var warmRepeats = 0

    public init(method: ProjectionMethod) { self.method = method }

    /// Projects and writes the outputs; returns the lines `idx project` prints on stdout.
    public func run() throws -> [String] {
        var printed: [String] = []
        // Every output is checked before the work: only regular files are replaced.
        for path in [out, svg, saveVectors].compactMap({ $0 }) { try OutputPath.checkFile(path) }
        var all: [Float], count: Int, dim: Int
        var genres: [String]
        var textRows: [String]? = nil
        var metadata: [DocumentMetadata]? = nil
        var embedder: EncoderModel? = nil
        var corpusTokens: TokenizedCorpus? = nil
        var ids: [String]? = nil
        let inputs = [corpus, texts, vectors].compactMap { $0 }.count
        var attachTo: VectorIndexReader? = nil
        if attach && (inputs > 0 || sample != nil || !genre.isEmpty) {
            throw IdxError("--attach stores one point per document of the index: give --index alone, without --texts, --corpus, --vectors, --sample or --genre")
        }
        if out == nil && !attach { throw IdxError("give --out FILE.csv for the points (or --attach to store them in the index)") }
        if inputs > 1 { throw IdxError("give one of --texts, --corpus or --vectors") }
        if inputs == 0 || (texts == nil && index != nil) {
            let dir = index ?? "indexes/movies"
            let reader = try VectorIndexReader(directory: dir)
            if attach { attachTo = reader }
            count = reader.count; dim = reader.dimension
            if count == 0 { throw IdxError("\(dir) holds no vectors; build it with idx index") }
            all = reader.dequantizedVectors()
            var meta = [DocumentMetadata](), idList = [String]()
            meta.reserveCapacity(count); idList.reserveCapacity(count)
            for i in 0 ..< count {
                meta.append(try reader.documentMetadata(i))
                idList.append(String(try reader.documentId(i)))
            }
            metadata = meta
            ids = idList
            genres = meta.map { $0.genre }
        } else if let corpus {
            guard texts == nil, vectors == nil else { throw IdxError("give one of --corpus, --texts or --vectors") }
            guard let model else { throw IdxError("--corpus needs --model models/<name> to embed the documents") }
            let reader = try CorpusReader(directory: corpus)
            let encoder = try EncoderModel.load(directory: model)
            guard reader.tokenizerHash == encoder.tokenizerHash else {
                throw IdxError("\(corpus) was tokenized with tokenizer \(reader.tokenizerHash) but \(model) uses \(encoder.tokenizerHash); re-ingest with `idx ingest --tokenizer \(model)/tokenizer.json`")
            }
            let meta = try reader.readMetadata()
            metadata = meta
            corpusTokens = try reader.readTokens()
            try encoder.checkVocabulary(corpusTokens!, source: corpus)
            embedder = encoder
            dim = encoder.config.dModel
            count = meta.count
            all = []
            genres = meta.map { $0.genre }
        } else if let texts {
            // The lines are embedded as queries are: with the index's model, max tokens and
            // standardisation (when an index is given or found), else with --model, to unit length.
            var reader: VectorIndexReader? = nil
            if index != nil || model == nil { reader = try VectorIndexReader(directory: index ?? "indexes/movies") }
            let modelDir: String
            if let model { modelDir = model } else {
                let m = reader!.modelDirectory
                if m.isEmpty { throw IdxError("\(reader!.directory) records no model (built from raw vectors); give --model models/<name>") }
                modelDir = m
            }
            let input = try LabelledTexts.read(path: texts)
            let encoder = try EncoderModel.load(directory: modelDir)
            if let reader { try reader.checkModel(modelHash: encoder.modelHash, tokenizerHash: encoder.tokenizerHash, modelDirectory: modelDir) }
            let tokenizer = try encoder.tokenizer()
            var corpus = TokenizedCorpus()
            for t in input.texts { corpus.append(tokenizer.encodeQuery(t)) }
            dim = encoder.config.dModel
            all = encoder.embed(corpus, range: 0 ..< corpus.count, maxTokens: reader?.manifest.maxTokens ?? 32, batchSize: 64)
            if let reader {
                for i in 0 ..< input.texts.count {
                    let q = reader.prepareQuery(Array(all[i * dim ..< (i + 1) * dim]))
                    for c in 0 ..< dim { all[i * dim + c] = q[c] }
                }
            } else {
                UnitVectors.normalizeRows(&all, dimension: dim)
            }
            count = input.texts.count
            genres = input.labels
            textRows = input.texts
        } else {
            guard let vectors else {
                throw IdxError("internal: no input")
            }
            guard let d = dim_ else { throw IdxError("--vectors needs --dim (the number of floats per row)") }
            dim = d
            (all, count) = try ProjectionInput.readVectors(path: vectors, dim: dim)
            genres = [String](repeating: "", count: count)
            if let labels {
                guard let text = try? String(contentsOfFile: labels, encoding: .utf8) else {
                    throw IdxError("cannot read labels file \(labels) as UTF-8 text")
                }
                var lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).map { String($0) }
                if lines.last == "" { lines.removeLast() }
                guard lines.count == count else {
                    throw IdxError("\(labels) has \(lines.count) lines but \(vectors) has \(count) rows; give one label per row")
                }
                genres = lines
            } else if !genre.isEmpty {
                throw IdxError("--genre needs labels: give --labels FILE with --vectors")
            }
        }
        let rows = try ProjectionInput.select(genres: genres, only: genre, sample: sample, seed: seed)
        let n = rows.count
        var x: [Float]
        if let embedder, let corpusTokens {
            // Embed only the selected documents.
            var selected = TokenizedCorpus()
            for i in rows { selected.append(corpusTokens.document(i)) }
            let progress = Progress("embed", unit: "docs", total: Double(n))
            x = []
            x.reserveCapacity(n * dim)
            var start = 0
            while start < n {
                let end = min(n, start + 1024)
                x += embedder.embed(selected, range: start ..< end, maxTokens: embedder.trainedMaxTokens, batchSize: 64)
                start = end
                progress.update(Double(start))
            }
            UnitVectors.normalizeRows(&x, dimension: dim)
            progress.finish(String(format: "embed: %d documents in %.1f s", n, progress.elapsed))
        } else {
            x = rows.count == count ? all : ProjectionInput.gather(all, dim: dim, rows: rows)
        }
        if let saveVectors {
            try AtomicFile.createParent(of: saveVectors)
            try AtomicFile.write(x.withUnsafeBytes { Data($0) }, to: saveVectors)
        }
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
                printed.append("PC\(c + 1) explained variance ratio \(String(format: "%.6f", r))")
            }
            xLabel = String(format: "PC1 (%.1f%% of variance)", 100 * pca.explainedVarianceRatio[0])
            yLabel = pca.k > 1 ? String(format: "PC2 (%.1f%% of variance)", 100 * pca.explainedVarianceRatio[1]) : "0"
            title = "PCA of \(n) embeddings"
        case .tsne:
            var o = TSNEOptions()
            o.perplexity = perplexity; o.iterations = iterations; o.seed = seed
            o.initialization = initialization; o.gradient = gradient; o.theta = theta
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
        if method == .pca && warmRepeats > 0 {
            var times: [Double] = []
            for _ in 0 ..< warmRepeats {
                let t0 = Date()
                _ = try PCA.fit(x, rows: n, dim: dim, components: min(2, dim))
                times.append(Date().timeIntervalSince(t0))
            }
            times.sort()
            FileHandle.standardError.write(Data(String(format: "pca warm: median %.4f s, min %.4f s over %d fits\n",
                                                      times[times.count / 2], times[0], times.count).utf8))
        }

        var csv: String
        if let textRows {
            csv = CSVExport.line(["text", "label", "x", "y"])
            for (r, i) in rows.enumerated() {
                csv += CSVExport.line([textRows[i], genres[i], CSVExport.number(coords[2 * r]), CSVExport.number(coords[2 * r + 1])])
            }
        } else {
            csv = CSVExport.line(["id", "title", "year", "genre", "x", "y"])
            for (r, i) in rows.enumerated() {
                let m = metadata?[i]
                csv += CSVExport.line([ids?[i] ?? String(i), m?.title ?? "", m?.year.map { String($0) } ?? "", genres[i],
                                       CSVExport.number(coords[2 * r]), CSVExport.number(coords[2 * r + 1])])
            }
        }
        if let out {
            try AtomicFile.createParent(of: out)
            try AtomicFile.write(Data(csv.utf8), to: out)
        }
        if let attachTo {
            try AttachedProjection(method: method, coordinates: coords).attach(to: attachTo)
        }
        if let svg {
            let plot = ScatterPlot(x: (0 ..< n).map { coords[2 * $0] }, y: (0 ..< n).map { coords[2 * $0 + 1] },
                                   groups: rows.map { genres[$0].isEmpty ? "(no label)" : genres[$0] },
                                   title: title, xLabel: xLabel, yLabel: yLabel,
                                   annotations: textRows.flatMap { t in n <= 60 ? rows.map { LabelledTexts.shortLabel(t[$0]) } : nil })
            try AtomicFile.createParent(of: svg)
            try AtomicFile.write(Data(plot.svg().utf8), to: svg)
        }
        Progress("project", unit: "points").finish(String(format: "project: %d points, %@ in %.3f s -> %@%@", n, method.rawValue, seconds,
                                                                   [out, attachTo.map { AttachedProjection.path(of: $0) }].compactMap { $0 }.joined(separator: " + "), svg.map { " + " + $0 } ?? ""))
            return printed
    }
}
