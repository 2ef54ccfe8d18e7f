import ArgumentParser
import Foundation
import IdxBase

/// The one place a command turns a failure into what the user sees: an `IdxError` becomes one
/// line on stderr (`prefix` + message) and exit status 1; ArgumentParser's own errors and exit
/// codes pass through unchanged.
func reportingErrors(prefix: String = "error: ", _ body: () throws -> Void) throws {
    do { try body() } catch let e as IdxError {
        printError(e.message, prefix: prefix)
        throw ExitCode.failure
    }
}

func reportingErrors(prefix: String = "error: ", _ body: () async throws -> Void) async throws {
    do { try await body() } catch let e as IdxError {
        printError(e.message, prefix: prefix)
        throw ExitCode.failure
    }
}

/// One line on stderr.
func printError(_ message: String, prefix: String = "error: ") {
    FileHandle.standardError.write(Data((prefix + message + "\n").utf8))
}

/// A status or summary line on stderr (stdout carries only results).
func printStatus(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// Buffered stdout: one write per batch of lines.
struct OutputBuffer {
    private var text = ""
    mutating func write(_ s: String) {
        text += s
        if text.utf8.count > 1 << 16 { flush() }
    }
    mutating func flush() {
        FileHandle.standardOutput.write(Data(text.utf8))
        text = ""
    }
}
