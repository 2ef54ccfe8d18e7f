import Foundation
import Hummingbird
import IdxBase

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

/// JSON bodies, in the bytes `idx search --json` prints its lines with (CompactJSON writes what
/// JSONSerialization's sorted-keys, unescaped-slashes output is, several times faster).
enum JSONResponse {
    static func make(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
        guard let bytes = try? CompactJSON.data(object) else {
            // Only a NaN or infinite score could get here; say so rather than send half an answer.
            let error = #"{"error":{"message":"internal error: the answer holds a number JSON cannot represent","status":500}}"#
            return Response(status: .internalServerError, headers: [.contentType: "application/json; charset=utf-8"],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: error)))
        }
        return Response(status: status, headers: [.contentType: "application/json; charset=utf-8"],
                        body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
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
