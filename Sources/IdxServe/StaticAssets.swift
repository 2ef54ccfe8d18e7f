import Foundation
import Hummingbird

/// The map page's files, compiled into the binary (Package.swift: embedInCode). The server
/// registers one route per file: a request's path selects an entry of this table and
/// nothing else, so no part of it ever reaches the file system.
enum StaticAssets {
    struct Asset: Sendable {
        let path: String
        let contentType: String
        let bytes: [UInt8]
    }

    static let all: [Asset] = [
        Asset(path: "/", contentType: "text/html; charset=utf-8", bytes: PackageResources.index_html),
        Asset(path: "/app.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.app_js),
        Asset(path: "/map.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.map_js),
        Asset(path: "/api.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.api_js),
        Asset(path: "/style.css", contentType: "text/css; charset=utf-8", bytes: PackageResources.style_css),
    ]

    static func response(_ asset: Asset) -> Response {
        Response(status: .ok,
                 headers: [.contentType: asset.contentType, .cacheControl: "no-cache",
                           .init("X-Content-Type-Options")!: "nosniff",
                           // Everything the page loads comes from idx itself.
                           .init("Content-Security-Policy")!: "default-src 'self'; img-src 'self' data:; style-src 'self'"],
                 body: ResponseBody(byteBuffer: ByteBuffer(bytes: asset.bytes)))
    }
}
