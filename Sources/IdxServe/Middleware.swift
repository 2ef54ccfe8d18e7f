import Foundation
import Hummingbird
import IdxBase
import NIOCore

/// First of all: moves the request's handler onto its connection's event loop, where it then
/// writes the response and reads the connection's next request. A handler starts where the
/// accept loop added its task and otherwise stays wherever it runs while its next request is
/// already read; a loop whose queue of such handlers never empties never polls its own sockets
/// (NIO runs a loop's tasks until none is left), and its connections stalled for up to a second
/// under load (docs/serve.md, thirteenth session). Once moved, a handler stays: the connection's
/// loop resumes it from then on.
struct ConnectionLoopMiddleware: RouterMiddleware {
    typealias Context = ServeRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        await ConnectionLoop.enter(context.eventLoop)
        return try await next(request, context)
    }
}

enum ConnectionLoop {
    /// Returns after a turn of `loop` when called off it: resumed from there, the task goes on on
    /// `loop` (NIO's executor keeps a job on the loop that enqueues it; IdxServer installs it).
    static func enter(_ loop: EventLoop) async {
        guard !loop.inEventLoop else { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in loop.execute { c.resume() } }
    }
}

/// Outermost: times every request and counts it by route pattern and status; turns any
/// error into a JSON body (an APIError's own, a framework error's status with a message,
/// else 500), so a client always gets `{"error": {...}}`.
struct MetricsAndErrorsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: ServeMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = DispatchTime.now().uptimeNanoseconds
        var response: Response
        do {
            response = try await next(request, context)
        } catch let e as APIError {
            response = try e.response(from: request, context: context)
        } catch let e as any HTTPResponseError {
            let message = e.status == .notFound
                ? "no route \(request.method.rawValue) \(request.uri.path); see / for the map and /healthz, /search, /documents/{id}, /neighbours/{id}, /map, /metrics for the API."
                : "\(e.status.reasonPhrase) (\(e))"
            response = try APIError(e.status, message).response(from: request, context: context)
        } catch {
            context.logger.error("\(request.method.rawValue) \(request.uri.path): \(error)")
            response = try APIError(.internalServerError, "internal error: \((error as? IdxError)?.message ?? "\(error)")")
                .response(from: request, context: context)
        }
        let route = context.endpointPath ?? "unmatched"
        metrics.request(route: route, method: request.method.rawValue, status: Int(response.status.code),
                        nanoseconds: Int64(DispatchTime.now().uptimeNanoseconds - start))
        return response
    }
}

/// With a token configured, every route but the page's files and /healthz needs
/// `Authorization: Bearer <token>` (compared in constant time).
struct BearerTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: [UInt8]
    let open: Set<String>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if open.contains(request.uri.path) { return try await next(request, context) }
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else {
            throw APIError(.unauthorized, field: "Authorization",
                           "this server needs a token: send the header Authorization: Bearer <token> (the page: open /#token=<token>).")
        }
        let given = Array(header.dropFirst("Bearer ".count).utf8)
        var difference = UInt8(given.count == token.count ? 0 : 1)
        for i in 0 ..< given.count { difference |= given[i] ^ token[i % max(token.count, 1)] }
        guard difference == 0 else {
            throw APIError(.unauthorized, field: "Authorization", "the bearer token is not the one this server was started with.")
        }
        return try await next(request, context)
    }
}
