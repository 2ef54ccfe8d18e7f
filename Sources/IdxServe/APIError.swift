import Foundation
import Hummingbird

/// A refused request: its HTTP status, the field at fault and a message saying what to do.
/// Sent as `{"error": {"status": 400, "field": "k", "message": "..."}}`.
public struct APIError: Error, HTTPResponseError {
    public var status: HTTPResponse.Status
    public var field: String?
    public var message: String

    public init(_ status: HTTPResponse.Status, field: String? = nil, _ message: String) {
        self.status = status
        self.field = field
        self.message = message
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var error: [String: Any] = ["status": Int(status.code), "message": message]
        if let field { error["field"] = field }
        var response = JSONResponse.make(["error": error], status: status)
        if status == .unauthorized { response.headers[.wwwAuthenticate] = "Bearer" }
        return response
    }
}

/// JSON bodies, serialized as `idx search --json` serializes its lines (sorted keys,
/// slashes unescaped), so the API's bytes match the command's.
enum JSONResponse {
    static let options: JSONSerialization.WritingOptions = [.sortedKeys, .withoutEscapingSlashes]

    static func make(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: options)) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json; charset=utf-8"],
                        body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// `a=1&b=two+words&c=%2B`: the query string as an HTML form sends it ('+' is a space).
enum FormQuery {
    static func parse(_ query: String?) -> [String: String] {
        var out: [String: String] = [:]
        guard let query, !query.isEmpty else { return out }
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String {
                let spaced = s.replacingOccurrences(of: "+", with: " ")
                return spaced.removingPercentEncoding ?? spaced
            }
            let key = decode(parts[0])
            if out[key] == nil { out[key] = parts.count > 1 ? decode(parts[1]) : "" }
        }
        return out
    }
}
