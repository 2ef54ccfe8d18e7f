import CSupport
import Foundation

/// Progress for long work: a line on stderr with rate and ETA, redrawn at most
/// a few times a second, only when stderr is a terminal. `finish` always
/// prints the one-line summary the caller composes.
public final class Progress {
    public let label: String
    public let unit: String
    public let total: Double?
    private let start = DispatchTime.now().uptimeNanoseconds
    private var lastDraw: UInt64 = 0
    private let interactive: Bool
    private var drew = false

    public init(_ label: String, unit: String, total: Double? = nil, enabled: Bool = true) {
        self.label = label
        self.unit = unit
        self.total = total
        interactive = enabled && idx_isatty(2) == 1
    }

    /// Seconds since the start.
    public var elapsed: Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

    /// Reports `done` units so far; `extra` is appended (e.g. "loss 3.21").
    public func update(_ done: Double, extra: String = "") {
        guard interactive else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        if now - lastDraw < 200_000_000 { return }
        lastDraw = now
        let secs = max(elapsed, 1e-9)
        let rate = done / secs
        var line = "\(label): \(Self.compact(done)) \(unit) (\(Self.compact(rate)) \(unit)/s"
        if let total, total > 0, rate > 0 {
            let pct = min(100, 100 * done / total)
            line += ", \(String(format: "%.1f", pct))%, ETA \(Self.duration(max(0, (total - done) / rate)))"
        }
        line += ")"
        if !extra.isEmpty { line += " " + extra }
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
        drew = true
    }

    /// Clears the progress line and prints `summary` on stderr.
    public func finish(_ summary: String) {
        if drew { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        FileHandle.standardError.write(Data((summary + "\n").utf8))
    }

    public static func compact(_ x: Double) -> String {
        if x >= 1e9 { return String(format: "%.2fG", x / 1e9) }
        if x >= 1e6 { return String(format: "%.2fM", x / 1e6) }
        if x >= 1e4 { return String(format: "%.1fk", x / 1e3) }
        if x == x.rounded() { return String(Int(x)) }
        return String(format: "%.2f", x)
    }

    public static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        if t >= 3600 { return "\(t / 3600)h\(String(format: "%02d", (t % 3600) / 60))m" }
        if t >= 60 { return "\(t / 60)m\(String(format: "%02d", t % 60))s" }
        return "\(t)s"
    }
}
