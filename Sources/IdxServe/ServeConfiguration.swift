import Foundation
import IdxBase

/// The bounds a request must stay within; anything past them is refused with a 4xx JSON
/// error naming the field, before any search work is done.
public struct ServeLimits: Sendable, Equatable {
    /// Largest request body (POST /search), in bytes.
    public var maxBodyBytes = 64 * 1024
    /// Longest query text, in characters.
    public var maxQueryCharacters = 1_000
    /// Largest k of /search and /neighbours.
    public var maxK = 100
    /// Most queries in one POST /search.
    public var maxBatch = 64
    public init() {}
}

/// How many threads scan the index for one search (a batch of queries, or one query).
public enum ScanThreads: Equatable, Sendable {
    /// Every core for a search that starts while no other runs, one while others run: one user
    /// exploring a large index waits on one scan of it, which two cores' memory bandwidth
    /// shortens, while concurrent requests already keep every core busy (docs/serve.md).
    case adaptive
    /// This many for every search (0: every core).
    case fixed(Int)
}

/// Everything `idx serve` is told: what to serve, where, and how strictly.
public struct ServeConfiguration: Sendable {
    /// The index folder (indexes/<name>); its CURRENT generation is served and followed.
    public var index: String
    /// Address to bind: loopback unless told otherwise.
    public var host = "127.0.0.1"
    /// TCP port (0: any free port, reported by the start-up line).
    public var port = 8080
    /// When set, every API route but /healthz needs `Authorization: Bearer <token>`.
    public var token: String?
    public var limits = ServeLimits()
    /// A connection that sends nothing for this long (no request part read, none being
    /// answered) is closed: an idle keep-alive, or a client that stopped halfway through its
    /// request, must not hold a socket (and a graceful shutdown) forever. A search being
    /// answered is never cut.
    public var idleTimeout: Duration = .seconds(30)
    /// After SIGTERM/SIGINT, how long requests in flight may take to finish before the server
    /// closes what is left and exits.
    public var shutdownTimeout: Duration = .seconds(10)
    /// Connections served at once; past it the server stops accepting until one closes (the
    /// kernel queues the rest). Without a bound, a flood of connections ran the process out of
    /// file descriptors, and then every accept failed at once and was retried at once: one core
    /// spun at 100% until the connections went away.
    public var maxConnections = ServeConfiguration.defaultMaxConnections(fileLimit: ServeConfiguration.openFileLimit())
    /// How often CURRENT (and the attached projection) is checked for a new generation.
    public var reloadInterval: Duration = .milliseconds(250)
    /// Threads scanning the index for one search.
    public var scanThreads = ScanThreads.adaptive
    /// Threads of their own that take waiting queries and search them in batches (QueryBatcher);
    /// 0: each event loop searches the queries it read, in batches, with no hand-off between
    /// threads (docs/serve.md compares the two), but a loop answers nothing else while it
    /// searches.
    public var batchThreads = 0
    /// NIO event loops (threads reading requests, writing answers and, by default, searching).
    public var eventLoops = ServeConfiguration.defaultThreads
    /// One event loop a core.
    public static let defaultThreads = Cores.available
    /// Where GET /search's batches run.
    var batchWorkers: QueryBatcher.Workers { batchThreads == 0 ? .eventLoops : .threads(batchThreads) }

    public init(index: String) { self.index = index }

    /// Leaves `reserve` descriptors of the process's limit for what is not a connection (the
    /// index's files, the event loops, logs): at most 10,000 connections, at least 16.
    public static func defaultMaxConnections(fileLimit: Int, reserve: Int = 128) -> Int {
        max(16, min(10_000, fileLimit - reserve))
    }

    /// The soft limit on open files (RLIMIT_NOFILE); 1,024 when it cannot be read.
    public static func openFileLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        return Int(clamping: UInt64(limit.rlim_cur))  // RLIM_INFINITY is the largest value: no bound
    }

    /// Reads a bearer token from a file (trailing whitespace dropped); refuses an empty one.
    public static func readToken(file path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw IdxError("--token-file \(path): cannot read it; give a readable file holding the token.")
        }
        let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty, !token.contains(where: { $0.isWhitespace }) else {
            throw IdxError("--token-file \(path): holds no token (empty, or whitespace inside it); write one token on one line.")
        }
        return token
    }
}
