import CoreMetrics
import Foundation
import Metrics
import Prometheus

/// The server's metrics, through swift-metrics' API onto a Prometheus registry of this
/// server's own (so that two servers in one process, as in the tests, do not mix counts).
/// /metrics prints the registry in Prometheus' text format.
public final class ServeMetrics: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    let reloads: CoreMetrics.Counter
    let reloadFailures: CoreMetrics.Counter
    private let generation: CoreMetrics.Gauge
    private let documents: CoreMetrics.Gauge
    private let lock = NSLock()
    private var perRoute: [String: (requests: CoreMetrics.Counter, errors: CoreMetrics.Counter?)] = [:]
    private var latency: [String: CoreMetrics.Timer] = [:]

    public init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        // Request latency from 100 µs (a search at 37k documents is ~0.3 ms) to 2.5 s.
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500),
        ]
        self.factory = factory
        reloads = CoreMetrics.Counter(label: "idx_generation_reloads_total", factory: factory)
        reloadFailures = CoreMetrics.Counter(label: "idx_generation_reload_failures_total", factory: factory)
        generation = CoreMetrics.Gauge(label: "idx_generation", factory: factory)
        documents = CoreMetrics.Gauge(label: "idx_documents", factory: factory)
    }

    /// Records the generation now served.
    func servedGeneration(_ g: ServedGeneration) {
        generation.record(Double(g.generationNumber))
        documents.record(Double(g.reader.count))
    }

    /// One answered request: `route` is the route's pattern (never the raw path, so the
    /// number of series stays bounded), `status` its HTTP status.
    func request(route: String, method: String, status: Int, nanoseconds: Int64) {
        let key = "\(method) \(route) \(status)"
        let (counters, timer): ((requests: CoreMetrics.Counter, errors: CoreMetrics.Counter?), CoreMetrics.Timer) = lock.withLock {
            let c: (requests: CoreMetrics.Counter, errors: CoreMetrics.Counter?)
            if let existing = perRoute[key] { c = existing } else {
                let dims = [("method", method), ("route", route), ("status", String(status))]
                c = (CoreMetrics.Counter(label: "idx_http_requests_total", dimensions: dims, factory: factory),
                     status >= 400 ? CoreMetrics.Counter(label: "idx_http_errors_total", dimensions: dims, factory: factory) : nil)
                perRoute[key] = c
            }
            let timerKey = "\(method) \(route)"
            let t: CoreMetrics.Timer
            if let existing = latency[timerKey] { t = existing } else {
                t = CoreMetrics.Timer(label: "idx_http_request_duration_seconds", dimensions: [("method", method), ("route", route)],
                                  factory: factory)
                latency[timerKey] = t
            }
            return (c, t)
        }
        counters.requests.increment()
        counters.errors?.increment()
        timer.recordNanoseconds(nanoseconds)
    }

    /// The Prometheus text exposition of every metric.
    public func text() -> String { registry.emitToString() }
}
