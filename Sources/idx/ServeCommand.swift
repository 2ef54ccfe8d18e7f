import ArgumentParser
import Foundation
import IdxServe
import Logging
import IdxBase
import IdxModel
import IdxSearch
import IdxProjection

/// `idx serve`: arguments in, IdxServer (Sources/IdxServe) does the rest.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the index: a JSON search API and a map of the corpus to explore in a browser.",
        discussion: """
        Routes: / (the map page), GET /search?q=...&k=...&genre=..., POST /search {"queries": [...]}, \
        GET /documents/{id}, GET /neighbours/{id}?k=..., GET /map, GET /healthz, GET /metrics. \
        Searches answer exactly what idx search --json prints. When a new generation is published \
        (CURRENT changes), the server switches to it without a restart. The map is the projection \
        attached with idx project --attach, else a PCA computed when the generation is loaded. \
        SIGTERM or SIGINT stops it gracefully. See docs/serve.md.
        """
    )

    @Option(help: "Index folder.") var index: String = "indexes/movies"
    @Option(help: "Address to bind (127.0.0.1: this machine only; 0.0.0.0: every interface).") var host: String = "127.0.0.1"
    @Option(help: "TCP port (0: any free port).") var port: Int = 8080
    @Option(help: "A file holding a bearer token: the API then needs Authorization: Bearer <token>.") var tokenFile: String?
    @Option(help: "Largest request body, in bytes.") var maxBodyBytes: Int = ServeLimits().maxBodyBytes
    @Option(help: "Longest query, in characters.") var maxQueryCharacters: Int = ServeLimits().maxQueryCharacters
    @Option(help: "Largest k a request may ask for.") var maxK: Int = ServeLimits().maxK
    @Option(help: "Most queries in one POST /search.") var maxBatch: Int = ServeLimits().maxBatch
    @Option(help: "Scan threads per search: auto (every core for a search that runs alone, one while others run) or a number (0: every core).")
    var threads: ScanThreads = .adaptive
    @Option(help: "Threads of their own that search waiting queries in batches (0: the event loop that read a query searches it, with the others it read at the same time).")
    var batchThreads: Int = 0
    @Option(help: "Threads that read requests and write answers (NIO event loops).") var eventLoops: Int = ServeConfiguration.defaultThreads
    @Option(help: "Seconds between checks of CURRENT for a new generation.") var reloadSeconds: Double = 0.25
    @Option(help: "Close a connection that sends nothing for this many seconds (an answer being written is never cut).")
    var idleSeconds: Double = 30
    @Option(help: "After SIGTERM or SIGINT, seconds requests in flight may take to finish before the server stops anyway.")
    var shutdownSeconds: Double = 10
    @Option(help: "Connections served at once; more wait in the kernel's queue (default: the open-file limit less 128, at most 10,000).")
    var maxConnections: Int?

    func run() async throws {
        try await reportingErrors(prefix: "idx serve: ") {
            var c = ServeConfiguration(index: index)
            c.host = host
            c.port = port
            guard (0 ... 65535).contains(port) else { throw IdxError("--port \(port): give a TCP port from 0 to 65535.") }
            c.token = try tokenFile.map { try ServeConfiguration.readToken(file: $0) }
            for (name, value) in [("--max-body-bytes", maxBodyBytes), ("--max-query-characters", maxQueryCharacters),
                                  ("--max-k", maxK), ("--max-batch", maxBatch), ("--event-loops", eventLoops)] where value < 1 {
                throw IdxError("\(name) \(value): give a positive number.")
            }
            guard maxK <= SearchEngine.maxResults else { throw IdxError("--max-k \(maxK): at most \(SearchEngine.maxResults).") }
            guard batchThreads >= 0 else { throw IdxError("--batch-threads \(batchThreads): give 0 (search on the event loops) or more.") }
            for (name, value) in [("--reload-seconds", reloadSeconds), ("--idle-seconds", idleSeconds), ("--shutdown-seconds", shutdownSeconds)]
            where !(value > 0 && value <= 86_400) {
                throw IdxError("\(name) \(value): give a positive number of seconds, at most a day.")
            }
            c.limits.maxBodyBytes = maxBodyBytes
            c.limits.maxQueryCharacters = maxQueryCharacters
            c.limits.maxK = maxK
            c.limits.maxBatch = maxBatch
            c.scanThreads = threads
            c.batchThreads = batchThreads
            c.eventLoops = eventLoops
            c.reloadInterval = .milliseconds(Int(reloadSeconds * 1000))
            c.idleTimeout = .milliseconds(Int(idleSeconds * 1000))
            c.shutdownTimeout = .milliseconds(Int(shutdownSeconds * 1000))
            if let maxConnections {
                guard maxConnections >= 1 else { throw IdxError("--max-connections \(maxConnections): give a positive number.") }
                c.maxConnections = maxConnections
            }
            // A query is a few tokens; OpenBLAS's idle workers would spin on the cores requests need.
            BLASRuntime.useOneThread()
            IdxServer.runConcurrencyOnEventLoops(eventLoops)
            var logger = Logger(label: "idx.serve")
            logger.logLevel = .info
            let server = try IdxServer(configuration: c, logger: logger)
            let served = server.holder.current
            let host = self.host, index = c.index
            try await server.run { port in
                print("idx serve: \(served.reader.count) documents of \(index) (\(served.generation), map: \(served.map.method.rawValue), \(served.map.source.rawValue)) on http://\(host):\(port)/")
                fflush(nil)  // every C stream, stdout among them (the global `stdout` is not concurrency-safe)
            }
            print("idx serve: stopped")
        }
    }
}

extension ScanThreads: ExpressibleByArgument {
    public init?(argument: String) {
        if argument == "auto" { self = .adaptive; return }
        guard let n = Int(argument), n >= 0 else { return nil }
        self = .fixed(n)
    }
    public var defaultValueDescription: String { if case .fixed(let n) = self { "\(n)" } else { "auto" } }
}
