import Hummingbird
import NIOCore

/// What a route knows besides its request: Hummingbird's core context, and the event loop of
/// the request's connection, where QueryBatcher searches its query.
public struct ServeRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let eventLoop: EventLoop

    public init(source: ApplicationRequestContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
        eventLoop = source.channel.eventLoop
    }
}
