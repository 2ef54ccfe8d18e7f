import Foundation

/// A scatter plot written as SVG text: points coloured by group (a fixed
/// 12-colour palette for the most frequent groups, then grey "other"), a
/// legend, axis ticks and labels, optional short annotations next to points.
public struct ScatterPlot {
    public var x: [Float]
    public var y: [Float]
    public var groups: [String]
    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var annotations: [String]? = nil
    public var width = 960.0
    public var height = 720.0

    public init(x: [Float], y: [Float], groups: [String], title: String, xLabel: String, yLabel: String,
                annotations: [String]? = nil) {
        self.x = x; self.y = y; self.groups = groups; self.title = title
        self.xLabel = xLabel; self.yLabel = yLabel; self.annotations = annotations
    }

    /// tab10 followed by two more distinct colours.
    public static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                                 "#e377c2", "#17becf", "#bcbd22", "#393b79", "#ad494a", "#637939"]
    public static let otherColour = "#9e9e9e"

    public static func escape(_ s: String) -> String {
        var out = ""
        for ch in s.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default:
                // XML 1.0 forbids most control characters.
                if ch.value < 0x20 && ch != "\t" && ch != "\n" && ch != "\r" { out += " " } else { out.unicodeScalars.append(ch) }
            }
        }
        return out
    }

    /// "Nice" tick positions (steps of 1, 2 or 5 × 10^k) covering [lo, hi].
    static func ticks(_ lo: Double, _ hi: Double, target: Int = 6) -> [Double] {
        let span = hi - lo
        guard span > 0, span.isFinite else { return [lo] }
        let raw = span / Double(target)
        let mag = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? 10 * mag
        var t = ceil(lo / step) * step
        var out = [Double]()
        while t <= hi + step * 1e-9 { out.append(abs(t) < step * 1e-9 ? 0 : t); t += step }
        return out
    }

    static func format(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e6 { return String(Int(v)) }
        return String(format: "%g", v)
    }

    /// Groups in legend order (most frequent first, ties by name); the first 12 get colours.
    public func legend() -> [(name: String, count: Int, colour: String)] {
        var counts = [String: Int]()
        for g in groups { counts[g, default: 0] += 1 }
        let ordered = counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        var out = [(String, Int, String)]()
        for (i, e) in ordered.enumerated() where i < Self.palette.count { out.append((e.key, e.value, Self.palette[i])) }
        if ordered.count > Self.palette.count {
            let rest = ordered[Self.palette.count...].reduce(0) { $0 + $1.value }
            out.append(("other", rest, Self.otherColour))
        }
        return out
    }

    public func svg() -> String {
        precondition(x.count == y.count && x.count == groups.count)
        let legendEntries = legend()
        var colourOf = [String: String]()
        for e in legendEntries where e.name != "other" || e.colour != Self.otherColour { colourOf[e.name] = e.colour }
        let left = 80.0, right = 240.0, top = 50.0, bottom = 70.0
        let plotW = width - left - right, plotH = height - top - bottom
        var x0 = Double(x.min() ?? 0), x1 = Double(x.max() ?? 1)
        var y0 = Double(y.min() ?? 0), y1 = Double(y.max() ?? 1)
        if x1 - x0 <= 0 { x0 -= 1; x1 += 1 }
        if y1 - y0 <= 0 { y0 -= 1; y1 += 1 }
        let padX = (x1 - x0) * 0.05, padY = (y1 - y0) * 0.05
        x0 -= padX; x1 += padX; y0 -= padY; y1 += padY
        func sx(_ v: Double) -> Double { left + (v - x0) / (x1 - x0) * plotW }
        func sy(_ v: Double) -> Double { top + plotH - (v - y0) / (y1 - y0) * plotH }
        func f(_ v: Double) -> String { String(format: "%.2f", v) }

        var s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
        s += "<rect x=\"0\" y=\"0\" width=\"\(Int(width))\" height=\"\(Int(height))\" fill=\"white\"/>\n"
        s += "<text x=\"\(f(left + plotW / 2))\" y=\"28\" font-size=\"18\" text-anchor=\"middle\">\(Self.escape(title))</text>\n"
        s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(plotW))\" height=\"\(f(plotH))\" fill=\"none\" stroke=\"#333\"/>\n"
        s += "<defs><clipPath id=\"plot-area\"><rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(plotW))\" height=\"\(f(plotH))\"/></clipPath></defs>\n"
        // Ticks and grid.
        s += "<g font-size=\"11\" fill=\"#333\">\n"
        for t in Self.ticks(x0, x1) {
            let px = sx(t)
            s += "<line x1=\"\(f(px))\" y1=\"\(f(top))\" x2=\"\(f(px))\" y2=\"\(f(top + plotH))\" stroke=\"#eee\"/>"
            s += "<line x1=\"\(f(px))\" y1=\"\(f(top + plotH))\" x2=\"\(f(px))\" y2=\"\(f(top + plotH + 5))\" stroke=\"#333\"/>"
            s += "<text x=\"\(f(px))\" y=\"\(f(top + plotH + 18))\" text-anchor=\"middle\">\(Self.format(t))</text>\n"
        }
        for t in Self.ticks(y0, y1) {
            let py = sy(t)
            s += "<line x1=\"\(f(left))\" y1=\"\(f(py))\" x2=\"\(f(left + plotW))\" y2=\"\(f(py))\" stroke=\"#eee\"/>"
            s += "<line x1=\"\(f(left - 5))\" y1=\"\(f(py))\" x2=\"\(f(left))\" y2=\"\(f(py))\" stroke=\"#333\"/>"
            s += "<text x=\"\(f(left - 8))\" y=\"\(f(py + 4))\" text-anchor=\"end\">\(Self.format(t))</text>\n"
        }
        s += "</g>\n"
        s += "<text x=\"\(f(left + plotW / 2))\" y=\"\(f(height - 22))\" font-size=\"14\" text-anchor=\"middle\">\(Self.escape(xLabel))</text>\n"
        s += "<text x=\"22\" y=\"\(f(top + plotH / 2))\" font-size=\"14\" text-anchor=\"middle\" transform=\"rotate(-90 22 \(f(top + plotH / 2)))\">\(Self.escape(yLabel))</text>\n"
        // Points: larger for small sets.
        let r = x.count <= 100 ? 5.0 : x.count <= 2000 ? 3.0 : 1.6
        let opacity = x.count <= 2000 ? "0.85" : "0.6"
        s += "<g fill-opacity=\"\(opacity)\" stroke=\"none\">\n"
        for i in 0 ..< x.count {
            let colour = colourOf[groups[i]] ?? Self.otherColour
            s += "<circle cx=\"\(f(sx(Double(x[i]))))\" cy=\"\(f(sy(Double(y[i]))))\" r=\"\(r)\" fill=\"\(colour)\"/>\n"
        }
        s += "</g>\n"
        if let annotations, annotations.count == x.count {
            s += "<g font-size=\"10\" fill=\"#222\" clip-path=\"url(#plot-area)\">\n"
            for i in 0 ..< x.count where !annotations[i].isEmpty {
                // Labels of points in the right quarter go to their left, so they stay inside the plot.
                let px = sx(Double(x[i])), py = sy(Double(y[i])) + 3
                if px > left + 0.75 * plotW {
                    s += "<text x=\"\(f(px - r - 2))\" y=\"\(f(py))\" text-anchor=\"end\">\(Self.escape(annotations[i]))</text>\n"
                } else {
                    s += "<text x=\"\(f(px + r + 2))\" y=\"\(f(py))\">\(Self.escape(annotations[i]))</text>\n"
                }
            }
            s += "</g>\n"
        }
        // Legend.
        let lx = left + plotW + 30
        s += "<g font-size=\"12\">\n"
        for (i, e) in legendEntries.enumerated() {
            let ly = top + 10 + Double(i) * 20
            s += "<circle cx=\"\(f(lx + 6))\" cy=\"\(f(ly))\" r=\"6\" fill=\"\(e.colour)\"/>"
            s += "<text x=\"\(f(lx + 18))\" y=\"\(f(ly + 4))\">\(Self.escape(e.name)) (\(e.count))</text>\n"
        }
        s += "</g>\n</svg>\n"
        return s
    }
}
