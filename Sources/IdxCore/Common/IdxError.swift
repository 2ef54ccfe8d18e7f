import Foundation

/// An error meant for the person at the terminal: `message` names the file,
/// the row or field, and what to do. The CLI prints it and exits non-zero.
public struct IdxError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
