import Foundation
import IdxBase
import IdxCorpus
import IdxLexical

extension LexicalSegmentBuilder {
    /// Writes the lexical segment beside the vector segment `segmentName` (same stem,
    /// `.idxlex`), reads it back, and returns its manifest entry.
    static func write(_ metadata: [DocumentMetadata], directory dir: String, besideSegment segmentName: String) throws -> IndexManifest.LexicalEntry {
        let bytes = encode(metadata)
        let name = (segmentName.hasSuffix(".idxseg") ? String(segmentName.dropLast(7)) : segmentName) + ".idxlex"
        try AtomicFile.write(Data(bytes), to: dir + "/" + name)
        let opened = try LexicalSegmentReader(path: dir + "/" + name) // never publish what cannot be read
        guard opened.documentCount == metadata.count else {
            throw IdxError("\(dir)/\(name): read back \(opened.documentCount) documents, wrote \(metadata.count); the disk is failing.")
        }
        return IndexManifest.LexicalEntry(file: name, bytes: bytes.count,
                                          hash: XXHash64.hex(XXHash64.hash(bytes)), terms: opened.termCount)
    }
}
