import Foundation
import IdxBase

extension IndexManifest {
    /// Largest vector dimension an index may declare (models are capped at d_model 8192).
    static let maxDimension = 8192

    /// Checks what the readers take from the manifest before they use it: sizes in range,
    /// every file a distinct path under `segments/` (none listed twice, none leaving the
    /// index folder), counts that add up, and standardisation statistics of the right length,
    /// finite, with positive deviations. `path` names the manifest in errors.
    func validate(path: String) throws {
        func bad(_ why: String) -> IdxError { IdxError("\(path): \(why); the index is corrupted: rebuild it with idx index.") }
        guard (1 ... Self.maxDimension).contains(dimension) else { throw bad("dimension \(dimension) is out of range (1...\(Self.maxDimension))") }
        guard generation >= 1 else { throw bad("generation \(generation) is not positive") }
        var files = Set<String>()
        var total = 0
        for (i, s) in segments.enumerated() {
            guard s.count >= 0, s.count <= Int(UInt32.max), s.bytes >= 0 else { throw bad("segment \(i) has count \(s.count) or bytes \(s.bytes) out of range") }
            total += s.count
            for (file, suffix) in [(s.file, ".idxseg")] + (s.lexical.map { [($0.file, ".idxlex")] } ?? []) {
                guard Self.isSegmentPath(file, suffix: suffix) else {
                    throw bad("segment \(i) names \"\(IdxError.printable(file))\", not a file segments/<name>\(suffix) inside the index folder")
                }
                guard files.insert(file).inserted else { throw bad("segment file \(IdxError.printable(file)) is listed twice") }
            }
            if let l = s.lexical, l.terms < 0 || l.bytes < 0 { throw bad("segment \(i) has a negative lexical count") }
        }
        guard total == count else { throw bad("count \(count) differs from the sum of its segments (\(total))") }
        if let st = standardization {
            guard st.mean.count == dimension, st.std.count == dimension else {
                throw bad("standardization has \(st.mean.count) means and \(st.std.count) deviations for dimension \(dimension)")
            }
            guard st.mean.allSatisfy({ $0.isFinite }), st.std.allSatisfy({ $0.isFinite && $0 > 0 }) else {
                throw bad("standardization holds a non-finite mean or a deviation that is not a positive number")
            }
        }
        if let w = lexicalWeight, !(w >= 0 && w <= 1) { throw bad("lexicalWeight \(w) is not between 0 and 1") }
    }

    /// `segments/<plain name><suffix>`: no `..`, no further folders, no absolute path.
    static func isSegmentPath(_ file: String, suffix: String) -> Bool {
        guard file.hasPrefix("segments/"), file.hasSuffix(suffix) else { return false }
        let name = file.dropFirst("segments/".count)
        return name.count > suffix.count && !name.contains("/") && !name.hasPrefix(".") && !name.contains("\0")
    }
}
