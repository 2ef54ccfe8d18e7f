import Foundation
import Hummingbird
import IdxBase
import IdxSearch
import NIOCore

/// The JSON API. Every search goes through SearchEngine.search (batched: QueryBatcher, or a
/// POST's batch) and every hit is written by HitJSON: the objects `idx search --json` prints.
struct ServeAPI: Sendable {
    let holder: GenerationHolder
    let configuration: ServeConfiguration
    /// GET /search's queries, batched while they come together.
    let batcher: QueryBatcher
    let started = Date()
    var limits: ServeLimits { configuration.limits }

    init(holder: GenerationHolder, configuration: ServeConfiguration) {
        self.holder = holder
        self.configuration = configuration
        batcher = QueryBatcher(workers: configuration.batchWorkers, scanThreads: configuration.scanThreads)
    }

    // MARK: search

    /// GET /search?q=…&k=…&genre=…[&lexical_weight=…&feedback_docs=…&genre_vote=…]: a JSON array
    /// of the hits, best first (the last three as `idx search --lexical-weight`, `--feedback-docs`,
    /// `--genre-vote`). `loop`: the connection's event loop, where the query is batched.
    func search(_ request: Request, loop: EventLoop) async throws -> Response {
        let params = FormQuery.parse(request.uri.query)
        guard let q = params["q"], !q.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw APIError(.badRequest, field: "q", "no query: give the text to search for, e.g. /search?q=alien+robot")
        }
        try checkLength(q, field: "q")
        let served = holder.current
        var settings = try settings(k: params["k"], genre: params["genre"], served: served)
        try tune(&settings, lexicalWeight: params["lexical_weight"], feedbackDocs: params["feedback_docs"], genreVote: params["genre_vote"])
        let hits: [SearchHit]
        switch await batcher.search(SearchQuery(q), settings, engine: served.engine, loop: loop) {
        case .success(let found): hits = found
        case .failure(let e): throw APIError(.badRequest, field: "q", e.message)
        }
        return JSONResponse.make(try objects(hits, served: served, query: q))
    }

    /// POST /search with {"queries": ["…", …], "k": 10, "genre": "Sci-Fi"}: per query, its hits
    /// or the error it met, in order: {"results": [{"query", "hits"} | {"query", "error"}]}.
    func searchBatch(_ request: Request) async throws -> Response {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limits.maxBodyBytes {
            throw tooLarge(length)
        }
        var request = request
        let body: ByteBuffer
        do { body = try await request.collectBody(upTo: limits.maxBodyBytes) } catch {
            throw tooLarge(nil)
        }
        guard let parsed = try? JSONSerialization.jsonObject(with: Data(buffer: body)), let object = parsed as? [String: Any] else {
            throw APIError(.badRequest, field: "body", "the body is not a JSON object; send {\"queries\": [\"alien robot\"], \"k\": 10}.")
        }
        guard let queries = object["queries"] as? [Any], !queries.isEmpty else {
            throw APIError(.badRequest, field: "queries", "give \"queries\": a non-empty array of query strings.")
        }
        guard queries.count <= limits.maxBatch else {
            throw APIError(.badRequest, field: "queries", "\(queries.count) queries: at most \(limits.maxBatch) in one request; split the batch.")
        }
        var texts: [String] = []
        for (i, q) in queries.enumerated() {
            guard let text = q as? String else {
                throw APIError(.badRequest, field: "queries[\(i)]", "queries[\(i)] is not a string; every query is a string of text.")
            }
            try checkLength(text, field: "queries[\(i)]")
            texts.append(text)
        }
        let k = try optionalField(object, "k", as: Int.self, example: "10")
        let genre = try optionalField(object, "genre", as: String.self, example: "\"Sci-Fi\"")
        let lexicalWeight = try optionalField(object, "lexical_weight", as: Double.self, example: "0.4")
        let feedbackDocs = try optionalField(object, "feedback_docs", as: Int.self, example: "5")
        let genreVote = try optionalField(object, "genre_vote", as: Double.self, example: "1")
        let served = holder.current
        var settings = try settings(k: k.map(String.init), genre: genre, served: served)
        try tune(&settings, lexicalWeight: lexicalWeight.map { String($0) }, feedbackDocs: feedbackDocs.map(String.init),
                 genreVote: genreVote.map { String($0) })
        var results: [[String: Any]] = []
        let found = batcher.scanning { threads in
            settings.threads = threads
            return served.engine.search(texts, settings)
        }
        for (text, result) in zip(texts, found) {
            switch result {
            case .success(let hits): results.append(["query": text, "hits": try objects(hits, served: served, query: text)])
            case .failure(let e): results.append(["query": text, "error": e.message])
            }
        }
        return JSONResponse.make(["results": results])
    }

    // MARK: documents

    /// GET /documents/{id}: the document's fields (those of a search hit, less the scores) and
    /// its place on the map.
    func document(_ id: String?) throws -> Response {
        let served = holder.current
        let row = try self.row(id, served: served)
        var fields: [UInt8] = []
        try HitJSON(SearchHit(index: row, score: 0), reader: served.reader, rank: 0, query: "").writeJSON(into: &fields)
        var o = try JSONSerialization.jsonObject(with: Data(fields)) as? [String: Any] ?? [:]
        for key in ["query", "rank", "score", "cosine", "bm25"] { o[key] = nil }
        o["x"] = Double(served.map.coordinates[2 * row])
        o["y"] = Double(served.map.coordinates[2 * row + 1])
        return JSONResponse.make(o)
    }

    /// GET /neighbours/{id}?k=…: "more like this", the documents whose vectors are closest to
    /// this one's (cosine over the same int8 scan and exact re-rank), itself excluded.
    func neighbours(_ id: String?, _ request: Request) throws -> Response {
        let served = holder.current
        let row = try self.row(id, served: served)
        let k = try parseK(FormQuery.parse(request.uri.query)["k"])
        let vector = served.reader.decodedVector(row)
        let others = try batcher.scanning { try served.engine.searcher.search(vector, k: k, excluding: row, threads: $0) }
        let query = "more like \(served.ids[row])"
        return JSONResponse.make(["id": served.ids[row], "neighbours": try objects(others, served: served, query: query)])
    }

    // MARK: map, health, metrics

    /// GET /map: every document's 2-D point, genre and id (JSON parallel arrays).
    func map() -> Response {
        let served = holder.current
        return JSONResponse.make(served.map.jsonObject(generation: served.generation))
    }

    /// GET /map.bin: the same points in the binary layout the page reads (ServedMap.encode).
    func mapBinary() -> Response {
        let served = holder.current
        return Response(status: .ok, headers: [.contentType: "application/octet-stream", .cacheControl: "no-cache"],
                        body: ResponseBody(byteBuffer: ByteBuffer(bytes: served.map.binary)))
    }

    /// GET /healthz: what is served (generation, model) and since when.
    func health() -> Response {
        let served = holder.current
        let m = served.reader.manifest
        var map: [String: Any] = ["method": served.map.method.rawValue, "source": served.map.source.rawValue]
        if let w = served.mapWarning { map["warning"] = w }
        return JSONResponse.make([
            "status": "ok", "index": configuration.index, "generation": served.generation,
            "generationNumber": served.generationNumber, "documents": served.reader.count,
            "modelHash": m.modelHash, "tokenizerHash": m.tokenizerHash, "map": map,
            "uptimeSeconds": (Date().timeIntervalSince(started) * 10).rounded() / 10,
        ])
    }

    // MARK: checks

    func settings(k: String?, genre: String?, served: ServedGeneration) throws -> SearchSettings {
        var s = SearchSettings(k: try parseK(k))
        if let genre, !genre.isEmpty {
            guard served.genres.contains(where: { $0.caseInsensitiveCompare(genre) == .orderedSame }) else {
                throw APIError(.badRequest, field: "genre",
                               "genre \"\(SearchEngine.quoted(genre))\" is not in this index; give one of: \(served.genres.joined(separator: ", ")).")
            }
            s.genre = genre
        }
        return s
    }

    /// The hybrid's BM25 share, the second pass's documents and the genre vote's weight, as idx
    /// search takes them.
    func tune(_ s: inout SearchSettings, lexicalWeight: String?, feedbackDocs: String?, genreVote: String?) throws {
        if let text = genreVote {
            guard let w = Float(text), w >= 0, w.isFinite else {
                throw APIError(.badRequest, field: "genre_vote", "genre_vote \(SearchEngine.quoted(text)): give a weight of 0 (no vote) or more.")
            }
            s.feedback.genreWeight = w
        }
        if let text = lexicalWeight {
            guard let w = Float(text), (0 ... 1).contains(w) else {
                throw APIError(.badRequest, field: "lexical_weight",
                               "lexical_weight \(SearchEngine.quoted(text)): give a BM25 share from 0 (cosine only) to 1 (BM25 only).")
            }
            s.lexicalWeight = w
        }
        if let text = feedbackDocs {
            guard let n = Int(text), (0 ... limits.maxK).contains(n) else {
                throw APIError(.badRequest, field: "feedback_docs",
                               "feedback_docs \(SearchEngine.quoted(text)): give 0 (one pass) to \(limits.maxK) documents for the second pass.")
            }
            s.feedback.documents = n
        }
    }

    func parseK(_ text: String?) throws -> Int {
        guard let text else { return 10 }
        guard let k = Int(text), (1 ... limits.maxK).contains(k) else {
            throw APIError(.badRequest, field: "k", "k \(SearchEngine.quoted(text)): give a whole number of results from 1 to \(limits.maxK).")
        }
        return k
    }

    func checkLength(_ text: String, field: String) throws {
        if text.count > limits.maxQueryCharacters {
            throw APIError(.badRequest, field: field,
                           "\(field) is \(text.count) characters long; at most \(limits.maxQueryCharacters) are accepted: shorten the query.")
        }
    }

    func optionalField<T>(_ object: [String: Any], _ name: String, as: T.Type, example: String) throws -> T? {
        guard let value = object[name], !(value is NSNull) else { return nil }
        // JSONSerialization reads 10 and 10.0 alike; k must be a whole number.
        if T.self == Int.self, let n = value as? NSNumber, let i = Int(exactly: n.doubleValue), !(value is Bool) {
            return (i as! T)
        }
        if T.self == String.self, let s = value as? String { return (s as! T) }
        if T.self == Double.self, let n = value as? NSNumber, !(value is Bool) { return (n.doubleValue as! T) }
        throw APIError(.badRequest, field: name, "\"\(name)\" has the wrong type; give e.g. \"\(name)\": \(example).")
    }

    func row(_ id: String?, served: ServedGeneration) throws -> Int {
        guard let id, let value = Int64(id) else {
            throw APIError(.badRequest, field: "id", "document id \"\(SearchEngine.quoted(id ?? ""))\" is not a whole number; ids are the \"id\" of search hits.")
        }
        guard let row = served.row(ofId: value) else {
            throw APIError(.notFound, field: "id",
                           "no document with id \(value) in \(configuration.index) (\(served.generation)); its ids run \(served.idRange).")
        }
        return row
    }

    func tooLarge(_ length: Int?) -> APIError {
        APIError(.contentTooLarge, field: "body",
                 "the body\(length.map { " (\($0) bytes)" } ?? "") is larger than \(limits.maxBodyBytes) bytes; send fewer or shorter queries.")
    }

    func objects(_ hits: [SearchHit], served: ServedGeneration, query: String) throws -> [HitJSON] {
        try hits.enumerated().map { try HitJSON($1, reader: served.reader, rank: $0 + 1, query: query) }
    }
}
