import Foundation
import IdxBase
import IdxCorpus

/// Inbox files the nightly job cannot ingest (empty, not CSV, not a regular file, too large,
/// unreadable) are moved to `<state>/quarantine/` and recorded in the journal with the reason,
/// and the rest of the batch goes on: one bad file must not stop every later run.
/// `idx nightly --status` lists them; `idx nightly --retry-quarantined` puts them back.
extension NightlyJob {
    var quarantineDir: String { config.state + "/quarantine" }

    /// Moves `local` (an inbox folder's entry, or a download) into quarantine and records it.
    /// A file that cannot be moved (another file system and not a regular file) stays where
    /// it is, reported as a problem; it is looked at again next run.
    static func quarantine(local: String, origin: String, reason: String, run: String, into dir: String,
                           state: inout NightlyState, report: inout Report, log: (String) -> Void) {
        let fm = FileManager.default
        let base = URL(fileURLWithPath: local).lastPathComponent
        var dest = dir + "/" + run + "-" + base
        var n = 1
        while FileKind(lstat: dest) != .missing { n += 1; dest = dir + "/" + run + "-\(n)-" + base }
        do {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            if Foundation.rename(local, dest) != 0 {
                guard errno == EXDEV, FileKind(lstat: local) == .regular else {
                    throw IdxError("cannot move it to \(dest): \(String(cString: strerror(errno)))")
                }
                let tmp = AtomicFile.temporarySibling(of: dest)
                try fm.copyItem(atPath: local, toPath: tmp)
                try AtomicFile.rename(tmp, to: dest)
                try fm.removeItem(atPath: local)
            }
        } catch {
            let why = (error as? IdxError)?.message ?? error.localizedDescription
            report.problems.append("\(IdxError.printable(local, limit: 200)): \(reason); it could not be quarantined (\(why)): remove it from the inbox.")
            return
        }
        let record = NightlyState.QuarantinedFile(origin: origin, stored: dest, reason: reason, run: run)
        state.quarantined = (state.quarantined ?? []) + [record]
        report.quarantined.append(record)
        log("nightly: quarantined \(IdxError.printable(local, limit: 200)): \(reason) (now \(dest); `idx nightly --retry-quarantined` takes it back)")
    }

    /// Puts every quarantined file back where it came from (a download is dropped, so that the
    /// next run fetches it again) and forgets it. Returns one line per file.
    public func retryQuarantined() throws -> [String] {
        let lock = try NightlyLock(path: config.state + "/nightly.lock")
        defer { lock.release() }
        var state = try NightlyState.load(statePath)
        var lines: [String] = [], kept: [NightlyState.QuarantinedFile] = []
        for q in state.quarantined ?? [] {
            let lower = q.origin.lowercased()
            if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
                try? FileManager.default.removeItem(atPath: q.stored)
                lines.append("\(q.origin): will be downloaded again by the next run")
            } else if FileKind(lstat: q.origin) != .missing {
                kept.append(q)
                lines.append("\(q.stored): left in quarantine, \(q.origin) exists again (move one of them away and retry)")
            } else if Foundation.rename(q.stored, q.origin) == 0 || FileKind(lstat: q.stored) == .missing {
                lines.append("\(q.origin): back in the inbox; the next run reads it again")
            } else {
                kept.append(q)
                lines.append("\(q.stored): cannot be moved back to \(q.origin) (\(String(cString: strerror(errno))))")
            }
        }
        state.quarantined = kept.isEmpty ? nil : kept
        try state.save(statePath)
        return lines
    }

    /// What `idx nightly --status` prints: what is published, any interrupted run, and the
    /// quarantined files with their reasons.
    public func status() throws -> String {
        let state = try NightlyState.load(statePath)
        var out: [String] = []
        if let p = state.published {
            out.append("published: run \(p.run), \(p.documents) documents, model \(p.modelHash), kNN precision \(String(format: "%.4f", p.metrics.knnPrecision))")
        } else {
            out.append("published: nothing yet")
        }
        out.append("ingested sources: \(state.sources.count)")
        if let p = state.pending { out.append("interrupted: run \(p.run) after stage \(p.stage.rawValue) (the next run finishes it)") }
        let q = state.quarantined ?? []
        out.append("quarantined: \(q.count) file\(q.count == 1 ? "" : "s")\(q.isEmpty ? "" : " (idx nightly --retry-quarantined puts them back)")")
        for f in q { out.append("  \(f.stored) (from \(f.origin), run \(f.run)): \(f.reason)") }
        return out.joined(separator: "\n")
    }
}

extension NightlyJob {
    /// Why `path` cannot be ingested (nil when it can): `Ingest.precheck`'s message.
    static func cannotIngest(_ path: String, maxBytes: Int64) -> String? {
        do {
            _ = try Ingest.precheck(path, maxBytes: Int(clamping: maxBytes))
            return nil
        } catch let e as IdxError {
            return e.message
        } catch {
            return "\(IdxError.printable(path, limit: 200)): \(error.localizedDescription)"
        }
    }
}
