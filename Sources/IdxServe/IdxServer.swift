import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import IdxBase

/// `idx serve`: the index's current generation behind a JSON API and the map page, on
/// Hummingbird (SwiftNIO), with swift-service-lifecycle running the HTTP server and the
/// generation watcher together and stopping both on SIGTERM/SIGINT (in-flight requests
/// finish; no new connection is accepted).
public struct IdxServer: Sendable {
    public let configuration: ServeConfiguration
    public let holder: GenerationHolder
    public let metrics = ServeMetrics()
    let logger: Logger

    /// Sizes NIO's shared event loop group (`eventLoops` threads) and runs Swift concurrency's
    /// jobs on it (call once, before serving): a request's handler then runs on the thread that
    /// read it, with no hop between two pools of threads. False when another executor was
    /// already installed.
    @discardableResult
    public static func runConcurrencyOnEventLoops(_ eventLoops: Int) -> Bool {
        NIOSingletons.groupLoopCountSuggestion = eventLoops
        return NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }

    /// Opens the index's current generation (and its map); refuses to start without one.
    public init(configuration: ServeConfiguration, logger: Logger = Logger(label: "idx.serve")) throws {
        self.configuration = configuration
        self.logger = logger
        let first = try ServedGeneration(index: configuration.index)
        holder = GenerationHolder(first)
        metrics.servedGeneration(first)
    }

    public func router() -> Router<ServeRequestContext> {
        let router = Router(context: ServeRequestContext.self)
        let api = ServeAPI(holder: holder, configuration: configuration)
        router.add(middleware: ConnectionLoopMiddleware())
        router.add(middleware: MetricsAndErrorsMiddleware(metrics: metrics))
        if let token = configuration.token {
            router.add(middleware: BearerTokenMiddleware(token: Array(token.utf8),
                                                         open: Set(StaticAssets.all.map(\.path) + ["/healthz"])))
        }
        for asset in StaticAssets.all {
            let response = StaticAssets.response(asset)
            router.get(RouterPath(asset.path)) { _, _ in response }
        }
        router.get("/search") { request, context in try await api.search(request, loop: context.eventLoop) }
        router.post("/search") { request, _ in try await api.searchBatch(request) }
        router.get("/documents/:id") { _, context in try api.document(context.parameters.get("id")) }
        router.get("/neighbours/:id") { request, context in try api.neighbours(context.parameters.get("id"), request) }
        router.get("/map") { _, _ in api.map() }
        router.get("/map.bin") { _, _ in api.mapBinary() }
        router.get("/healthz") { _, _ in api.health() }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.text())))
        }
        return router
    }

    /// The HTTP server and the generation watcher as one Hummingbird application.
    /// `onServerRunning` receives the bound port (useful with port 0).
    public func application(onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        let watcher = GenerationWatcher(index: configuration.index, holder: holder, interval: configuration.reloadInterval,
                                        metrics: metrics, logger: logger)
        var app = Application(
            router: router(),
            server: .http1(configuration: .init(idleTimeout: TimeAmount(configuration.idleTimeout))),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "idx",
                                 availableConnectionsDelegate: MaximumAvailableConnections(configuration.maxConnections)),
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
        app.addServices(watcher)
        return app
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    public func run(onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        do {
            var group = ServiceGroupConfiguration(services: [.init(service: application(onServerRunning: onServerRunning))],
                                                  gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            // A client that never finishes its request would otherwise hold the shutdown open.
            group.maximumGracefulShutdownDuration = configuration.shutdownTimeout
            try await ServiceGroup(configuration: group).run()
        } catch let e as IOError {
            let address = "\(configuration.host):\(configuration.port)"
            switch e.errnoCode {
            case EADDRINUSE: throw IdxError("cannot listen on \(address): the port is in use; pick another --port (0: any free one).")
            case EACCES: throw IdxError("cannot listen on \(address): permission denied; ports below 1024 need privileges, pick a higher --port.")
            case EADDRNOTAVAIL: throw IdxError("cannot listen on \(address): no interface of this machine has that address; check --host.")
            default: throw IdxError("cannot listen on \(address): \(e).")
            }
        }
    }
}
