import Foundation

/// A 2-D Barnes-Hut quadtree in flat buffers (no per-node allocation): storage
/// is kept between builds and grows by doubling; the 4 children of a node are
/// consecutive nodes.
final class QuadTree {
    private(set) var capacity = 0
    private(set) var nodes = 0
    // One node record: cell centre and half width, centre of mass, point count,
    // first child (-1 for a leaf), a leaf's representative point (-1 when empty).
    var centreX: UnsafeMutablePointer<Double>, centreY: UnsafeMutablePointer<Double>, half: UnsafeMutablePointer<Double>
    var massX: UnsafeMutablePointer<Double>, massY: UnsafeMutablePointer<Double>
    var count: UnsafeMutablePointer<Int32>, child: UnsafeMutablePointer<Int32>, point: UnsafeMutablePointer<Int32>

    init(capacity: Int = 1024) {
        self.capacity = capacity
        centreX = .allocate(capacity: capacity); centreY = .allocate(capacity: capacity); half = .allocate(capacity: capacity)
        massX = .allocate(capacity: capacity); massY = .allocate(capacity: capacity)
        count = .allocate(capacity: capacity); child = .allocate(capacity: capacity); point = .allocate(capacity: capacity)
    }

    deinit {
        centreX.deallocate(); centreY.deallocate(); half.deallocate(); massX.deallocate(); massY.deallocate()
        count.deallocate(); child.deallocate(); point.deallocate()
    }

    private static func grown<T>(_ p: UnsafeMutablePointer<T>, _ old: Int, _ new: Int) -> UnsafeMutablePointer<T> {
        let q = UnsafeMutablePointer<T>.allocate(capacity: new)
        q.moveInitialize(from: p, count: old)
        p.deallocate()
        return q
    }

    @inline(__always)
    private func addNode(_ cx: Double, _ cy: Double, _ h: Double) {
        if nodes == capacity {
            let new = capacity * 2
            centreX = Self.grown(centreX, nodes, new); centreY = Self.grown(centreY, nodes, new); half = Self.grown(half, nodes, new)
            massX = Self.grown(massX, nodes, new); massY = Self.grown(massY, nodes, new)
            count = Self.grown(count, nodes, new); child = Self.grown(child, nodes, new); point = Self.grown(point, nodes, new)
            capacity = new
        }
        centreX[nodes] = cx; centreY[nodes] = cy; half[nodes] = h
        massX[nodes] = 0; massY[nodes] = 0; count[nodes] = 0; child[nodes] = -1; point[nodes] = -1
        nodes += 1
    }

    /// Builds the tree over y (n × 2).
    func build(_ y: UnsafePointer<Double>, n: Int) {
        nodes = 0
        var minX = Double.infinity, maxX = -Double.infinity, minY = Double.infinity, maxY = -Double.infinity
        for i in 0 ..< n {
            minX = min(minX, y[2 * i]); maxX = max(maxX, y[2 * i])
            minY = min(minY, y[2 * i + 1]); maxY = max(maxY, y[2 * i + 1])
        }
        let h0 = max(maxX - minX, maxY - minY, 1e-12) * 0.5 * (1 + 1e-6)
        addNode((minX + maxX) / 2, (minY + maxY) / 2, h0)
        let minHalf = h0 * 1e-12
        for i in 0 ..< n {
            let px = y[2 * i], py = y[2 * i + 1]
            var node = 0
            while true {
                count[node] += 1; massX[node] += px; massY[node] += py
                let c = child[node]
                if c >= 0 {
                    node = Int(c) + (px >= centreX[node] ? 1 : 0) + (py >= centreY[node] ? 2 : 0)
                    continue
                }
                if point[node] < 0 { point[node] = Int32(i); break }
                let j = Int(point[node])
                // Same position (or a cell too small to split): the leaf holds them together.
                if (y[2 * j] == px && y[2 * j + 1] == py) || half[node] < minHalf { break }
                // Split: move the resident point(s) one level down, then continue with i.
                let first = nodes
                let h = half[node] / 2, cx = centreX[node], cy = centreY[node]
                addNode(cx - h, cy - h, h); addNode(cx + h, cy - h, h)
                addNode(cx - h, cy + h, h); addNode(cx + h, cy + h, h)
                child[node] = Int32(first)
                point[node] = -1
                let resident = count[node] - 1
                let jx = y[2 * j], jy = y[2 * j + 1]
                let q = first + (jx >= cx ? 1 : 0) + (jy >= cy ? 2 : 0)
                count[q] = resident; massX[q] = jx * Double(resident); massY[q] = jy * Double(resident); point[q] = Int32(j)
                node = first + (px >= cx ? 1 : 0) + (py >= cy ? 2 : 0)
            }
        }
        for v in 0 ..< nodes where count[v] > 0 {
            massX[v] /= Double(count[v]); massY[v] /= Double(count[v])
        }
    }

    /// Repulsive term for point i: Σ_j w_ij² (y_i - y_j) into (fx, fy) and Σ_j w_ij as the
    /// return value, w = 1 / (1 + |y_i - y_j|²), a cell being summarised by its centre of
    /// mass when (cell width)² < θ² d² (scikit-learn's criterion). `stack` is scratch
    /// of at least 4 × depth + 1 entries.
    @inline(__always)
    func repulsion(_ y: UnsafePointer<Double>, _ i: Int, theta2: Double, stack: UnsafeMutablePointer<Int32>,
                   fx: inout Double, fy: inout Double) -> Double {
        let px = y[2 * i], py = y[2 * i + 1]
        var sumQ = 0.0, ax = 0.0, ay = 0.0
        var sp = 1
        stack[0] = 0
        while sp > 0 {
            sp -= 1
            let node = Int(stack[sp])
            let cnt = count[node]
            if cnt == 0 { continue }
            let dx = px - massX[node], dy = py - massY[node]
            let d2 = dx * dx + dy * dy
            let c = child[node]
            if c < 0 {
                let j = Int(point[node])
                if y[2 * j] == px && y[2 * j + 1] == py {
                    sumQ += Double(cnt - 1)  // duplicates of i: w = 1, no force; i itself excluded
                    continue
                }
            } else if 4 * half[node] * half[node] >= theta2 * d2 {
                stack[sp] = c; stack[sp + 1] = c + 1; stack[sp + 2] = c + 2; stack[sp + 3] = c + 3
                sp += 4
                continue
            }
            let w = 1 / (1 + d2)
            let m = Double(cnt)
            sumQ += m * w
            let w2 = m * w * w
            ax += w2 * dx; ay += w2 * dy
        }
        fx = ax; fy = ay
        return sumQ
    }
}
