import Foundation
import IdxBase

extension NightlyJob {
    /// Checks everything a run will need before its first stage, so that a run does not ingest,
    /// train and index for half an hour and then fail at the gate: the eval files exist and are
    /// regular files, and every folder the run will replace or write is absent, empty or one
    /// idx wrote (a folder of the user's at `[paths] model` would otherwise be replaced whole).
    func preflight() throws {
        for (path, key) in [(config.seedTest, "[eval] seed_test"), (config.validation, "[eval] validation")] where !path.isEmpty {
            let kind = FileKind(stat: path)
            guard kind == .regular else {
                let what = kind == .missing ? "does not exist" : "is \(FileKind.describe(path)), not a regular file"
                throw IdxError("\(IdxError.printable(path, limit: 200)) (\(key)) \(what); fix the path (relative paths in a config file are relative to its folder) or pass --\(key == "[eval] seed_test" ? "seed-test" : "validation"). Nothing was done.")
            }
        }
        try OutputPath.checkFolder(config.model, kind: .model, inputs: [])
        try OutputPath.checkFolder(config.index, kind: .index, inputs: [])
        try OutputPath.checkFolder(corpusCurrent, kind: .corpus, inputs: [])
        for (path, key) in [(config.runs, "[paths] runs"), (config.state, "[paths] state"), (config.corpus, "[paths] corpus")] {
            let kind = FileKind(stat: path)  // a link to a folder is fine here: nothing replaces these
            guard kind == .missing || kind == .directory else {
                throw IdxError("\(IdxError.printable(path, limit: 200)) (\(key)) is \(FileKind.describe(path)), not a folder; choose another path. Nothing was done.")
            }
        }
    }
}
