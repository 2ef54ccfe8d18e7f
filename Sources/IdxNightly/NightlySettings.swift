import Foundation
import IdxBase
import IdxProjection

/// A setting's value as `idx.toml` or a flag gives it, before validation.
public enum NightlySettingValue: Equatable {
    case string(String)
    case strings([String])
    case integer(Int)
    case number(Double)
    case bool(Bool)

    var typeName: String {
        switch self {
        case .string: return "a string"
        case .strings: return "an array of strings"
        case .integer: return "an integer"
        case .number: return "a number"
        case .bool: return "a boolean"
        }
    }
}

/// One setting of `idx nightly`, declared once: its `idx.toml` section and key, its flag, its
/// kind (type and validation) and where it lives in `NightlyConfig`. A value from the config
/// file and a value from the command line go through the same `apply`, so they are checked
/// alike and refused with the same words.
public struct NightlySetting: Sendable {
    enum Kind: Sendable {
        case string(WritableKeyPath<NightlyConfig, String> & Sendable)
        /// An array of strings; one string stands for an array of one.
        case strings(WritableKeyPath<NightlyConfig, [String]> & Sendable)
        case int(WritableKeyPath<NightlyConfig, Int> & Sendable, min: Int)
        case int64(WritableKeyPath<NightlyConfig, Int64> & Sendable, min: Int64)
        /// Integers are numbers too.
        case number(WritableKeyPath<NightlyConfig, Double> & Sendable)
        case bool(WritableKeyPath<NightlyConfig, Bool> & Sendable)
        /// "none", "pca" or "tsne".
        case projection(WritableKeyPath<NightlyConfig, ProjectionMethod?> & Sendable)
    }

    public let section: String
    public let key: String
    /// The command-line flag that overrides the key (nil: the config file only).
    public let flag: String?
    let kind: Kind

    /// `[section] key` for help texts.
    public var name: String { "[\(section)] \(key)" }

    /// Validates `value` and stores it in `config`; `at` names where it came from in errors
    /// (the file and key, or the flag).
    func apply(_ value: NightlySettingValue, to config: inout NightlyConfig, at: String) throws {
        func mismatch(_ wanted: String) -> IdxError { IdxError("\(at) must be \(wanted), not \(value.typeName).") }
        switch (kind, value) {
        case let (.string(path), .string(s)): config[keyPath: path] = s
        case let (.string, other): throw IdxError("\(at) must be a string in quotes, not \(other.typeName).")
        case let (.strings(path), .strings(a)): config[keyPath: path] = a
        case let (.strings(path), .string(s)): config[keyPath: path] = [s]
        case (.strings, _): throw mismatch("an array of strings, like [\"a\", \"b\"]")
        case let (.int(path, min), .integer(i)):
            guard i >= min else { throw IdxError("\(at) must be at least \(min) (got \(i)).") }
            config[keyPath: path] = i
        case (.int, _): throw mismatch("a whole number")
        case let (.int64(path, min), .integer(i)):
            guard Int64(i) >= min else { throw IdxError("\(at) must be at least \(min) (got \(i)).") }
            config[keyPath: path] = Int64(i)
        case (.int64, _): throw mismatch("a whole number")
        case let (.number(path), .integer(i)): config[keyPath: path] = Double(i)
        case let (.number(path), .number(d)):
            guard d.isFinite else { throw IdxError("\(at) must be a finite number (got \(d)).") }
            config[keyPath: path] = d
        case (.number, _): throw mismatch("a number")
        case let (.bool(path), .bool(b)): config[keyPath: path] = b
        case (.bool, _): throw mismatch("true or false")
        case let (.projection(path), .string(s)):
            if s == "none" { config[keyPath: path] = nil; return }
            guard let m = ProjectionMethod(rawValue: s) else {
                throw IdxError("\(at) must be \"none\", \"pca\" or \"tsne\", not \"\(s)\".")
            }
            config[keyPath: path] = m
        case (.projection, _): throw mismatch("\"none\", \"pca\" or \"tsne\"")
        }
    }
}

/// Every setting `idx.toml` and `idx nightly`'s flags accept (idx.example.toml documents each
/// key with its default, which is `NightlyConfig()`'s).
public enum NightlySettings {
    public static let all: [NightlySetting] = [
        NightlySetting(section: "inbox", key: "sources", flag: "--inbox", kind: .strings(\.inbox)),
        NightlySetting(section: "inbox", key: "max_file_bytes", flag: "--max-file-bytes", kind: .int64(\.maxFileBytes, min: 1)),
        NightlySetting(section: "inbox", key: "follow_symlinks", flag: "--follow-symlinks", kind: .bool(\.followSymlinks)),
        NightlySetting(section: "paths", key: "corpus", flag: "--corpus", kind: .string(\.corpus)),
        NightlySetting(section: "paths", key: "model", flag: "--model", kind: .string(\.model)),
        NightlySetting(section: "paths", key: "index", flag: "--index", kind: .string(\.index)),
        NightlySetting(section: "paths", key: "runs", flag: "--runs", kind: .string(\.runs)),
        NightlySetting(section: "paths", key: "state", flag: "--state", kind: .string(\.state)),
        NightlySetting(section: "train", key: "steps", flag: "--steps", kind: .int(\.steps, min: 0)),
        NightlySetting(section: "train", key: "from_scratch", flag: "--from-scratch", kind: .bool(\.fromScratch)),
        NightlySetting(section: "train", key: "procs", flag: "--procs", kind: .int(\.procs, min: 1)),
        NightlySetting(section: "train", key: "seed", flag: "--seed", kind: .int(\.seed, min: 0)),
        NightlySetting(section: "train", key: "vocab_size", flag: "--vocab-size", kind: .int(\.vocabSize, min: 6)),
        NightlySetting(section: "train", key: "titles", flag: nil, kind: .bool(\.titles)),
        NightlySetting(section: "train", key: "args", flag: "--train-arg", kind: .strings(\.trainArgs)),
        NightlySetting(section: "eval", key: "validation", flag: "--validation", kind: .string(\.validation)),
        NightlySetting(section: "eval", key: "seed_test", flag: "--seed-test", kind: .string(\.seedTest)),
        NightlySetting(section: "eval", key: "k", flag: "--k", kind: .int(\.k, min: 1)),
        NightlySetting(section: "gate", key: "max_knn_drop", flag: "--max-knn-drop", kind: .number(\.maxKnnDrop)),
        NightlySetting(section: "gate", key: "min_seed_ratio", flag: "--min-seed-ratio", kind: .number(\.minSeedRatio)),
        NightlySetting(section: "download", key: "attempts", flag: "--download-attempts", kind: .int(\.downloadAttempts, min: 1)),
        NightlySetting(section: "download", key: "timeout_seconds", flag: "--download-timeout", kind: .number(\.downloadTimeout)),
        NightlySetting(section: "download", key: "max_seconds", flag: "--download-max-seconds", kind: .number(\.downloadMaxSeconds)),
        NightlySetting(section: "map", key: "projection", flag: "--map-projection", kind: .projection(\.mapProjection)),
    ]

    /// The sections, in the order of `all`.
    public static var sections: [String] { all.map(\.section).reduce(into: []) { if !$0.contains($1) { $0.append($1) } } }

    /// The setting a flag sets (a programming error when there is none).
    public static func flag(_ flag: String) -> NightlySetting {
        guard let s = all.first(where: { $0.flag == flag }) else { preconditionFailure("no nightly setting has the flag \(flag)") }
        return s
    }

    /// A flag's value, checked and stored as the same key of `idx.toml` would be.
    public static func set(_ flag: String, _ value: NightlySettingValue, in config: inout NightlyConfig) throws {
        try Self.flag(flag).apply(value, to: &config, at: flag)
    }

    /// The settings of a parsed `idx.toml` over `config`. Unknown sections and keys are errors
    /// (a typo must not silently fall back to a default); errors name the file, line and key.
    public static func apply(_ doc: TOMLDocument, to config: NightlyConfig) throws -> NightlyConfig {
        var c = config
        let known = sections
        for section in doc.sections.keys.sorted() {
            let entries = doc.sections[section]!
            guard known.contains(section) else {
                if entries.isEmpty && section.isEmpty { continue }
                let what = section.isEmpty ? "top-level keys (\(entries.keys.sorted().joined(separator: ", ")))" : "section [\(section)]"
                throw IdxError("\(doc.source): unknown \(what); the sections are \(known.map { "[\($0)]" }.joined(separator: ", ")) (see idx.example.toml).")
            }
            let settings = all.filter { $0.section == section }
            for key in entries.keys.sorted() {
                guard let setting = settings.first(where: { $0.key == key }) else {
                    throw IdxError("\(doc.location(section, key)): unknown key `\(key)` in [\(section)]; it takes \(settings.map(\.key).sorted().joined(separator: ", ")) (see idx.example.toml).")
                }
                try setting.apply(value(entries[key]!), to: &c, at: doc.location(section, key) + ": `\(key)`")
            }
        }
        return c
    }

    static func value(_ v: TOMLValue) -> NightlySettingValue {
        switch v {
        case let .string(s): return .string(s)
        case let .strings(a): return .strings(a)
        case let .integer(i): return .integer(i)
        case let .float(d): return .number(d)
        case let .bool(b): return .bool(b)
        }
    }
}
