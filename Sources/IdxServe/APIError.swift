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
        for pair in query.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            let key = decode(parts[0])
            if out[key] == nil { out[key] = parts.count > 1 ? decode(parts[1]) : "" }
        }
        return out
    }

    /// '+' as a space and %XX as the byte XX; a component with a malformed escape, or whose
    /// bytes are not UTF-8 once decoded, is kept as it came (with '+' as a space).
    static func decode(_ bytes: Substring.UTF8View.SubSequence) -> String {
        var spaced = [UInt8](), decoded = [UInt8]()
        spaced.reserveCapacity(bytes.count); decoded.reserveCapacity(bytes.count)
        var malformed = false
        var i = bytes.startIndex
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case UInt8(ascii: "0") ... UInt8(ascii: "9"): return b - UInt8(ascii: "0")
            case UInt8(ascii: "a") ... UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A") ... UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        while i < bytes.endIndex {
            let b = bytes[i] == UInt8(ascii: "+") ? UInt8(ascii: " ") : bytes[i]
            spaced.append(b)
            if b == UInt8(ascii: "%") {
                let j = bytes.index(after: i)
                if j < bytes.endIndex, bytes.index(after: j) < bytes.endIndex,
                   let hi = hex(bytes[j]), let lo = hex(bytes[bytes.index(after: j)]) {
                    decoded.append(hi << 4 | lo)
                    spaced.append(bytes[j]); spaced.append(bytes[bytes.index(after: j)])
                    i = bytes.index(j, offsetBy: 2)
                    continue
                }
                malformed = true
            }
            decoded.append(b)
            i = bytes.index(after: i)
        }
        if !malformed, let text = String(validating: decoded, as: UTF8.self) { return text }
        return String(decoding: spaced, as: UTF8.self)
    }
}
