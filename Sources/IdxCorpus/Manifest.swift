import Foundation

/// `manifest.json` of a corpus folder.
public struct CorpusManifest: Codable, Equatable, Sendable {
    static let currentVersion = 1

    struct Shard: Codable, Equatable, Sendable {
        var index: Int
        var firstDocument: Int
        var documents: Int
        var tokens: Int
        var tokensFile: String
        var tokensXxh64: String
        var tokensBytes: Int
        var metadataFile: String
        var metadataXxh64: String
        var metadataBytes: Int
    }

    struct Source: Codable, Equatable, Sendable {
        var path: String
        var size: Int
        var xxh64: String
        var rows: Int
        var documents: Int
        var droppedShort: Int
        var skippedRows: Int
    }

    struct Stats: Codable, Equatable, Sendable {
        var rowsRead: Int
        var droppedShort: Int
        var skippedRows: Int
        var cutAtDash: Int
        var unknownTokens: Int
        /// Rows that repeated a film already kept (its genres merged into it); nil: written
        /// before ingest merged duplicates, or with --keep-duplicates.
        var duplicateRows: Int? = nil
    }

    var format: String = "idx-corpus"
    var formatVersion: Int = currentVersion
    var documents: Int
    var tokens: Int
    var vocabSize: Int
    var tokenizerFile: String = "tokenizer.json"
    var tokenizerHash: String
    var tokenizerTrained: Bool
    var shardDocuments: Int
    /// Documents are "Title. description" (Ingest.Options.titlesInText); nil (older corpora): descriptions only.
    var titlesInText: Bool?
    var shards: [Shard]
    var sources: [Source]
    var stats: Stats

    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return e
    }

    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }
}
