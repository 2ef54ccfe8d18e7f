import Foundation
import IdxBase

/// Lines to embed and project: `text<TAB>label` (label optional), blank lines skipped.
public struct LabelledTexts {
    public var texts: [String]
    public var labels: [String]

    public static func read(path: String) throws -> LabelledTexts {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw IdxError("cannot read texts file \(path): check the path")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw IdxError("\(path) is not UTF-8 text")
        }
        var out = LabelledTexts(texts: [], labels: [])
        for (lineNo, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).enumerated() {
            var line = Substring(raw)
            if line.hasSuffix("\r") { line = line.dropLast() }
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            let parts = line.split(separator: "\t", maxSplits: 1, omittingEmptySubsequences: false)
            let t = String(parts[0]).trimmingCharacters(in: .whitespaces)
            if t.isEmpty { throw IdxError("\(path), line \(lineNo + 1): the text (first column) is empty") }
            out.texts.append(t)
            out.labels.append(parts.count > 1 ? String(parts[1]).trimmingCharacters(in: .whitespaces) : "")
        }
        return out
    }

    /// The first few words of a text, for point annotations.
    public static func shortLabel(_ text: String, words: Int = 4) -> String {
        let w = text.split(separator: " ")
        return w.prefix(words).joined(separator: " ") + (w.count > words ? "…" : "")
    }
}
