import CSupport
import Foundation
import IdxBase

/// `idx ingest`: CSV files -> cleaned documents -> WordLevel tokenizer -> zstd token and
/// metadata shards + manifest.json, staged in a temporary folder and published atomically.
///
/// Two passes, bounded memory:
/// - pass 1 streams every CSV through libcsv, cleans each description, counts its words
///   (a hash map that grows with the vocabulary), writes the metadata shards as they fill,
///   and spills the cleaned texts (one per line: cleaning removes newlines) to a temporary
///   file inside the staging folder;
/// - the vocabulary is trained from the counts (or read with `--tokenizer`);
/// - pass 2 streams the spill, encodes, and writes the token shards as they fill.
/// Peak memory: the CSV read buffer (1 MiB) + the longest row + the word counts + one
/// shard's tokens and metadata (`shardDocuments` documents) + its compressed copy.
public enum Ingest {
    /// idx's vocabulary size: 8,000 words (UNK 9% of the real corpus's tokens, against 21% at
    /// the notebook's 2,000) gave the best search of every size tried (docs/search-quality.md).
    public static let defaultVocabSize = 8000
    /// The reference notebook's vocabulary size (`idx ingest --vocab-size 2000`).
    public static let referenceVocabSize = 2000

    public struct Options {
        public var inputs: [String]
        public var output: String
        public var tokenizerPath: String?
        public var vocabSize: Int = Ingest.defaultVocabSize
        public var minFrequency: Int = 0
        public var shardDocuments: Int = 50_000
        public var showProgress: Bool = true
        /// Each document's text, for the tokenizer and the model, is "Title. description" (the
        /// title without its " - year"), cleaned by the same rules; the length rule, the cut count
        /// and the stored metadata still read the description alone. Off: the notebook's
        /// description-only documents.
        public var titlesInText = false
        /// One film, one document: rows repeating a title, year and description are merged into
        /// the first, which carries all their genres (FilmDeduplicator). Off: every row is a document.
        public var deduplicate = true
        /// A case-folded vocabulary (HF's Lowercase normalizer in tokenizer.json): typed queries
        /// are lower-case, synopses are not. Off: the notebook's case-sensitive words.
        public var lowercase = true
        /// Replace an existing output folder that holds files idx did not write (never one
        /// holding an input: OutputPath.checkFolder).
        public var force = false
        /// Largest input file accepted (nil: any size); the nightly sets `[inbox] max_file_bytes`.
        public var maxInputBytes: Int?
        /// Test hook: fail after this many token shards were written.
        var failAfterTokenShards: Int?

        public init(inputs: [String], output: String, tokenizerPath: String? = nil, vocabSize: Int = Ingest.defaultVocabSize,
                    shardDocuments: Int = 50_000, showProgress: Bool = true) {
            self.inputs = inputs; self.output = output; self.tokenizerPath = tokenizerPath
            self.vocabSize = vocabSize; self.shardDocuments = shardDocuments; self.showProgress = showProgress
        }
    }

    public struct Summary {
        public var rowsRead = 0
        public var documents = 0
        public var droppedShort = 0
        public var skippedRows = 0
        public var cutAtDash = 0
        public var duplicateRows = 0
        public var tokens = 0
        public var unknownTokens = 0
        public var shards = 0
        public var vocabSize = 0
        public var seconds = 0.0
        public var output = ""
        public var tokenizerHash = ""

        public var line: String {
            let unk = tokens > 0 ? 100 * Double(unknownTokens) / Double(tokens) : 0
            return "ingest: \(rowsRead) rows read, \(documents) documents kept; dropped: \(droppedShort) of <= \(Cleaning.minimumLength) chars, "
                + "\(duplicateRows) repeating a film already kept (genres merged), "
                + "\(skippedRows) malformed rows; \(cutAtDash) cut at \" - \"; \(tokens) tokens, UNK \(String(format: "%.2f", unk))%, "
                + "vocabulary \(vocabSize), \(shards) shard\(shards == 1 ? "" : "s"), \(String(format: "%.2f", seconds)) s -> \(output)"
        }
    }

    /// Runs the ingest. `warn` receives one line per skipped row (file:line: why).
    @discardableResult
    public static func run(_ options: Options, warn: (String) -> Void = { _ in }) throws -> Summary {
        let start = DispatchTime.now().uptimeNanoseconds
        guard !options.inputs.isEmpty else { throw IdxError("ingest: no CSV file given.") }
        guard options.shardDocuments > 0 else { throw IdxError("--shard-docs must be at least 1.") }
        guard options.vocabSize > SpecialToken.names.count else {
            throw IdxError("--vocab-size must be more than the \(SpecialToken.names.count) special tokens.")
        }
        let fm = FileManager.default
        let totalBytes = try checkInputs(options.inputs, maxBytes: options.maxInputBytes)
        let out = options.output.hasSuffix("/") && options.output.count > 1 ? String(options.output.dropLast()) : options.output
        try OutputPath.checkFolder(out, kind: .corpus, inputs: options.inputs + [options.tokenizerPath ?? ""], force: options.force)
        let lock = try OutputLock.acquire(out, command: "idx ingest")
        defer { lock.release() }
        let parent = URL(fileURLWithPath: out).deletingLastPathComponent().path
        let parentExisted = fm.fileExists(atPath: parent)
        try AtomicFile.createParent(of: out)
        removeStaleStaging(of: out)
        let staged = AtomicFile.temporarySibling(of: out)
        do {
            try fm.createDirectory(atPath: staged, withIntermediateDirectories: false)
        } catch {
            throw IdxError("\(staged): cannot create the staging folder: \(error.localizedDescription)")
        }
        do {
            var summary = try build(options, staged: staged, totalBytes: totalBytes, warn: warn)
            try AtomicFile.publishDirectory(staged, at: out)
            summary.output = out
            summary.seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            return summary
        } catch {
            try? fm.removeItem(atPath: staged)
            if !parentExisted { rmdir(parent) }  // the folder this run created, if still empty
            throw error
        }
    }

    /// Removes staging folders of earlier ingests into `out` that were killed.
    static func removeStaleStaging(of out: String) { AtomicFile.removeStaleStaging(of: out) }

    /// Column positions of one CSV's header.
    struct Columns {
        var title = -1, genre = -1, expanded = -1, rating = -1, description = -1, count = 0
    }

    static func columns(_ row: CSVRow, file: String) throws -> Columns {
        var c = Columns()
        c.count = row.fieldCount
        var names = [String]()
        for i in 0 ..< row.fieldCount {
            let name = String(decoding: row.field(i), as: UTF8.self).trimmingCharacters(in: .whitespaces)
            names.append(name)
            switch name.lowercased() {
            case "movie title - year", "title": c.title = i
            case "genre": c.genre = i
            case "expanded-genres", "expanded_genres": c.expanded = i
            case "rating": c.rating = i
            case "description": c.description = i
            default: break
            }
        }
        if c.description < 0 {
            throw IdxError("\(file): no \"description\" column; the header (line 1) has \(names.count) column\(names.count == 1 ? "" : "s"): "
                + names.prefix(12).map { "\"\(IdxError.printable($0, limit: 40))\"" }.joined(separator: ", ") + (names.count > 12 ? ", …" : "")
                + ". Give a CSV whose header names a description column.")
        }
        return c
    }

    static func build(_ options: Options, staged: String, totalBytes: Int, warn: (String) -> Void) throws -> Summary {
        var summary = Summary()
        var trainer = WordLevelTrainer(vocabSize: options.vocabSize, minFrequency: options.minFrequency, lowercase: options.lowercase)
        var fixed: WordLevelTokenizer?
        if let path = options.tokenizerPath { fixed = try WordLevelTokenizer(contentsOfFile: path) }
        let spillPath = staged + "/.cleaned-texts"
        let spill = try BufferedWriter(path: spillPath)
        var shards = [CorpusManifest.Shard]()
        var sources = [CorpusManifest.Source]()
        var meta = [UInt8]()
        meta.reserveCapacity(1 << 20)
        var metaDocs = 0
        var clean = [UInt8](repeating: 0, count: 1 << 16)
        var titled = [UInt8](), titledClean = [UInt8]()
        var warnings = 0
        let writer = BackgroundShardWriter(directory: staged)
        defer { writer.waitAll() }  // no write may land in the staging folder after we return

        func flushMetadata() throws {
            let i = shards.count
            let name = String(format: "metadata-%05d.jsonl.zst", i)
            let full = meta  // handed to the writer; `meta` starts a new buffer
            meta = []
            meta.reserveCapacity(full.count)
            try writer.submit(name, full)
            let first = shards.last.map { $0.firstDocument + $0.documents } ?? 0
            shards.append(.init(index: i, firstDocument: first, documents: metaDocs, tokens: 0, tokensFile: "", tokensXxh64: "",
                                tokensBytes: 0, metadataFile: name, metadataXxh64: "", metadataBytes: 0))
            metaDocs = 0
        }

        var films = FilmDeduplicator()
        if options.deduplicate {
            let progress0 = Progress("ingest (pass 0: find films listed twice)", unit: "MB", total: Double(totalBytes) / 1e6, enabled: options.showProgress)
            var bytesRead = 0
            for path in options.inputs {
                var cols: Columns?
                try CSVReader(path: path).read(onBytes: { chunk in
                    bytesRead += chunk.count
                    progress0.update(Double(bytesRead) / 1e6)
                }, onRow: { row in
                    guard let c = cols else { cols = try columns(row, file: path); return }
                    guard row.fieldCount == c.count else { return }
                    films.observe(filmKey(row, c), genre: c.genre >= 0 ? String(decoding: row.field(c.genre), as: UTF8.self) : "")
                }, onUnterminated: { _ in })
            }
        }

        let progress = Progress("ingest (pass 1: read, clean, count)", unit: "MB", total: Double(totalBytes) / 1e6, enabled: options.showProgress)
        var bytesDone = 0
        for path in options.inputs {
            var hasher = XXHash64()
            var size = 0
            var cols: Columns?
            var source = CorpusManifest.Source(path: path, size: 0, xxh64: "", rows: 0, documents: 0, droppedShort: 0, skippedRows: 0)
            let sourceJSON: [UInt8] = { var b = [UInt8](); JSONText.appendString(Array(path.utf8), to: &b); return b }()
            func skip(_ line: Int, _ why: String) {
                source.skippedRows += 1
                warnings += 1
                if warnings <= 20 { warn("\(path):\(line): row skipped: \(why)") }
                else if warnings == 21 { warn("(further skipped rows are counted in the summary only)") }
            }
            try CSVReader(path: path).read(onBytes: { chunk in
                hasher.update(chunk)
                size += chunk.count
                bytesDone += chunk.count
                progress.update(Double(bytesDone) / 1e6, extra: "\(summary.rowsRead + source.rows) rows, \(Progress.compact(Double(summary.rowsRead + source.rows) / max(progress.elapsed, 1e-9))) rows/s")
            }, onRow: { row in
                guard let c = cols else { cols = try columns(row, file: path); return }
                source.rows += 1
                if row.fieldCount != c.count {
                    skip(row.line, "\(row.fieldCount) field\(row.fieldCount == 1 ? "" : "s") where the header has \(c.count) (an unterminated quote or a stray comma?)")
                    return
                }
                let d = row.field(c.description)
                if clean.count < d.count { clean = [UInt8](repeating: 0, count: d.count) }
                let (n, cut) = clean.withUnsafeMutableBufferPointer { Cleaning.cleanBytes(d.baseAddress!, d.count, into: $0.baseAddress!) }
                if cut { summary.cutAtDash += 1 }
                if n <= Cleaning.minimumLength { source.droppedShort += 1; return }
                var genres: [String]?
                if options.deduplicate {
                    guard let g = films.claim(filmKey(row, c)) else { summary.duplicateRows += 1; return }
                    if g.count > 1 { genres = g }
                }
                if options.titlesInText {
                    // "Title. description", cleaned as one text (a " - " inside the title becomes a space,
                    // so that the cut still falls where the description's own cut does)
                    titled.removeAll(keepingCapacity: true)
                    let t = titleAndYear(row, c).title
                    var i = 0
                    while i < t.count {
                        if i + 2 < t.count && t[i] == 0x20 && t[i + 1] == 0x2D && t[i + 2] == 0x20 { titled.append(0x20); i += 3; continue }
                        titled.append(t[i]); i += 1
                    }
                    if !titled.isEmpty { titled.append(0x2E); titled.append(0x20) }  // ". "
                    titled.append(contentsOf: d)
                    if titledClean.count < titled.count { titledClean = [UInt8](repeating: 0, count: titled.count) }
                    let m = titledClean.withUnsafeMutableBufferPointer { out in
                        titled.withUnsafeBufferPointer { Cleaning.cleanBytes($0.baseAddress!, $0.count, into: out.baseAddress!).length }
                    }
                    try titledClean.withUnsafeBufferPointer { b in
                        try spill.append(b.baseAddress!, m)
                        if fixed == nil { trainer.count(b.baseAddress!, m) }
                    }
                }
                try clean.withUnsafeBufferPointer { b in
                    let p = b.baseAddress!
                    if !options.titlesInText {
                        try spill.append(p, n)
                        if fixed == nil { trainer.count(p, n) }
                    }
                    spill.append(byte: 0x0A)
                    appendMetadata(row, c, cleaned: UnsafeBufferPointer(start: p, count: n), sourceJSON: sourceJSON,
                                   sourceRow: source.rows, mergedGenres: genres, to: &meta)
                }
                source.documents += 1
                metaDocs += 1
                if metaDocs == options.shardDocuments { try flushMetadata() }
            }, onUnterminated: { line in
                source.rows += 1
                skip(line, "a quoted field that never closes (the rest of the file after line \(line) is part of it)")
            })
            if cols == nil { throw IdxError("\(path): no header row; the file has no CSV content.") }
            source.size = size
            source.xxh64 = XXHash64.hex(hasher.finalize())
            summary.rowsRead += source.rows
            summary.documents += source.documents
            summary.droppedShort += source.droppedShort
            summary.skippedRows += source.skippedRows
            sources.append(source)
        }
        if metaDocs > 0 { try flushMetadata() }
        try spill.flush()
        if options.showProgress && idx_isatty(2) == 1 {
            progress.finish("ingest: pass 1 done: \(summary.rowsRead) rows, \(summary.documents) documents in \(String(format: "%.2f", progress.elapsed)) s")
        }
        if summary.documents == 0 {
            throw IdxError("\(options.inputs.joined(separator: ", ")): no document survives the cleaning (\(summary.rowsRead) rows, \(summary.droppedShort) too short, \(summary.skippedRows) malformed); nothing written.")
        }

        let tokenizer = fixed ?? trainer.train()
        try SyncedFile.write(tokenizer.json, to: staged + "/tokenizer.json")
        summary.vocabSize = tokenizer.vocabSize
        summary.tokenizerHash = tokenizer.hash

        // Pass 2: the spill -> token shards.
        let progress2 = Progress("ingest (pass 2: encode)", unit: "docs", total: Double(summary.documents), enabled: options.showProgress)
        let fd = open(spillPath, O_RDONLY)
        if fd < 0 { throw IdxError("\(spillPath): cannot reopen the spill: \(String(cString: strerror(errno))).") }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var filled = 0
        var ids = [Int32]()
        var offsets = [0]
        var shardIndex = 0
        var done = 0

        func flushTokens() throws {
            let name = String(format: "tokens-%05d.bin.zst", shardIndex)
            guard shardIndex < shards.count, shards[shardIndex].documents == offsets.count - 1 else {
                throw IdxError("internal error: token shard \(shardIndex) does not align with its metadata shard.")
            }
            try writer.submit(name, TokenShard.encode(ids: ids, offsets: offsets, idBytes: TokenShard.idBytes(vocabSize: tokenizer.vocabSize)))
            shards[shardIndex].tokens = ids.count
            shards[shardIndex].tokensFile = name
            summary.tokens += ids.count
            shardIndex += 1
            ids.removeAll(keepingCapacity: true)
            offsets.removeAll(keepingCapacity: true)
            offsets.append(0)
            if let k = options.failAfterTokenShards, shardIndex >= k {
                throw IdxError("injected failure after \(k) token shard(s)")
            }
        }

        while true {
            if filled == buffer.count { buffer += [UInt8](repeating: 0, count: buffer.count) }  // a text longer than the buffer
            let got = buffer.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if got < 0 { throw IdxError("\(spillPath): read error: \(String(cString: strerror(errno))).") }
            if got == 0 { break }
            filled += got
            var consumed = 0
            try buffer.withUnsafeBufferPointer { b in
                let p = b.baseAddress!
                while let nl = memchr(p + consumed, 0x0A, filled - consumed) {
                    let end = UnsafePointer(nl.assumingMemoryBound(to: UInt8.self)) - p
                    summary.unknownTokens += tokenizer.encode(p + consumed, end - consumed, into: &ids)
                    offsets.append(ids.count)
                    consumed = end + 1
                    done += 1
                    if offsets.count - 1 == options.shardDocuments { try flushTokens() }
                }
            }
            if consumed > 0 {
                buffer.withUnsafeMutableBufferPointer { b in b.baseAddress!.update(from: b.baseAddress! + consumed, count: filled - consumed) }
                filled -= consumed
            }
            progress2.update(Double(done))
        }
        if offsets.count > 1 { try flushTokens() }
        if options.showProgress && idx_isatty(2) == 1 {
            progress2.finish("ingest: pass 2 done: \(done) documents encoded in \(String(format: "%.2f", progress2.elapsed)) s")
        }
        guard done == summary.documents, shardIndex == shards.count else {
            throw IdxError("\(spillPath): the spill holds \(done) documents, pass 1 kept \(summary.documents); disk trouble? Nothing was published.")
        }
        try FileManager.default.removeItem(atPath: spillPath)
        let written = try writer.finish()
        for i in shards.indices {
            guard let t = written[shards[i].tokensFile], let m = written[shards[i].metadataFile] else {
                throw IdxError("internal error: shard \(i) was not written.")
            }
            (shards[i].tokensXxh64, shards[i].tokensBytes) = t
            (shards[i].metadataXxh64, shards[i].metadataBytes) = m
        }
        summary.shards = shards.count

        let manifest = CorpusManifest(documents: summary.documents, tokens: summary.tokens, vocabSize: tokenizer.vocabSize,
                                      tokenizerHash: tokenizer.hash, tokenizerTrained: fixed == nil,
                                      shardDocuments: options.shardDocuments, titlesInText: options.titlesInText ? true : nil,
                                      shards: shards, sources: sources,
                                      stats: .init(rowsRead: summary.rowsRead, droppedShort: summary.droppedShort,
                                                   skippedRows: summary.skippedRows, cutAtDash: summary.cutAtDash,
                                                   unknownTokens: summary.unknownTokens,
                                                   duplicateRows: options.deduplicate ? summary.duplicateRows : nil))
        try SyncedFile.write([UInt8](try CorpusManifest.encoder().encode(manifest)), to: staged + "/manifest.json")
        return summary
    }

    // MARK: metadata lines

    static let keyTitle = Array("{\"title\":".utf8), keyYear = Array(",\"year\":".utf8), keyGenre = Array(",\"genre\":".utf8)
    static let keyExpanded = Array(",\"expanded_genres\":".utf8), keyRating = Array(",\"rating\":".utf8)
    static let keyDescription = Array(",\"description\":".utf8), keySource = Array(",\"source_file\":".utf8)
    static let keyRow = Array(",\"source_row\":".utf8), null = Array("null".utf8)

    /// The film a row describes, for FilmDeduplicator: its raw title-and-year and description fields.
    static func filmKey(_ row: CSVRow, _ c: Columns) -> UInt64 {
        FilmDeduplicator.key(title: c.title >= 0 ? row.field(c.title) : .init(start: nil, count: 0), description: row.field(c.description))
    }

    /// One JSON line: title, year, genre, expanded genres, rating, the cleaned description, source file and row.
    /// `mergedGenres`: a film listed under several genres (FilmDeduplicator): its genre field is
    /// them all, comma-separated, and its expanded genres gain any it lacks.
    static func appendMetadata(_ row: CSVRow, _ c: Columns, cleaned: UnsafeBufferPointer<UInt8>, sourceJSON: [UInt8],
                               sourceRow: Int, mergedGenres: [String]? = nil, to out: inout [UInt8]) {
        let (title, year) = titleAndYear(row, c)
        let none = UnsafeBufferPointer<UInt8>(start: nil, count: 0)
        out += keyTitle; appendText(title, &out)
        out += keyYear; if let year { appendInt(year, &out) } else { out += null }
        out += keyGenre
        if let mergedGenres {
            JSONText.appendString(Array(mergedGenres.joined(separator: ", ").utf8), to: &out)
            out += keyExpanded
            let expanded = String(decoding: c.expanded >= 0 ? row.field(c.expanded) : none, as: UTF8.self)
            JSONText.appendString(Array(FilmDeduplicator.mergedGenreList(expanded, adding: mergedGenres).utf8), to: &out)
        } else {
            appendText(c.genre >= 0 ? row.field(c.genre) : none, &out)
            out += keyExpanded; appendText(c.expanded >= 0 ? row.field(c.expanded) : none, &out)
        }
        out += keyRating
        if c.rating >= 0, let r = number(row.field(c.rating)) { out.append(contentsOf: r) } else { out += null }
        out += keyDescription; JSONText.appendString(cleaned, to: &out)
        out += keySource; out += sourceJSON
        out += keyRow; appendInt(sourceRow, &out)
        out.append(0x7D); out.append(0x0A)
    }

    /// The "movie title - year" field split into the title and the year (nil when there is none).
    static func titleAndYear(_ row: CSVRow, _ c: Columns) -> (title: UnsafeBufferPointer<UInt8>, year: Int?) {
        var title = c.title >= 0 ? row.field(c.title) : UnsafeBufferPointer(start: nil, count: 0)
        var year: Int?
        // "movie title - year": the year is the digits after the last " - ".
        if title.count > 3, let base = title.baseAddress {
            var i = title.count - 3
            while i >= 0 {
                if base[i] == 0x20 && base[i + 1] == 0x2D && base[i + 2] == 0x20 { break }
                i -= 1
            }
            if i >= 0 {
                let digits = UnsafeBufferPointer(rebasing: title[(i + 3)...])
                if digits.count > 0 && digits.count <= 6 && digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
                    year = digits.reduce(0) { $0 * 10 + Int($1 - 0x30) }
                    title = UnsafeBufferPointer(rebasing: title[..<i])
                }
            }
        }
        return (title, year)
    }

    @inline(__always)
    static func appendInt(_ v: Int, _ out: inout [UInt8]) {
        if v < 0 { out.append(0x2D); appendInt(-v, &out); return }
        if v >= 10 { appendInt(v / 10, &out) }
        out.append(UInt8(0x30 + v % 10))
    }

    /// A field as a JSON string; invalid UTF-8 is replaced (U+FFFD) so the line stays valid JSON.
    @inline(__always)
    static func appendText(_ b: UnsafeBufferPointer<UInt8>, _ out: inout [UInt8]) {
        if b.allSatisfy({ $0 < 0x80 }) { JSONText.appendString(b, to: &out); return }
        JSONText.appendString(Array(String(decoding: b, as: UTF8.self).utf8), to: &out)
    }

    /// The rating as a JSON number (its own digits: -?(0|[1-9][0-9]*)(.[0-9]+)?), or nil when
    /// empty or anything else.
    static func number(_ b: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8>? {
        var lo = 0, hi = b.count
        while lo < hi && b[lo] == 0x20 { lo += 1 }
        while hi > lo && b[hi - 1] == 0x20 { hi -= 1 }
        var i = lo
        if i < hi && b[i] == 0x2D { i += 1 }
        let intStart = i
        while i < hi && b[i] >= 0x30 && b[i] <= 0x39 { i += 1 }
        let intDigits = i - intStart
        if intDigits == 0 || (intDigits > 1 && b[intStart] == 0x30) { return nil }
        if i < hi && b[i] == 0x2E {
            i += 1
            let f = i
            while i < hi && b[i] >= 0x30 && b[i] <= 0x39 { i += 1 }
            if i == f { return nil }
        }
        return i == hi ? UnsafeBufferPointer(rebasing: b[lo ..< hi]) : nil
    }
}
