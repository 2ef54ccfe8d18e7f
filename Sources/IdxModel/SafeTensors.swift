import Foundation
import IdxBase

/// safetensors files (F32 tensors only): 8-byte little-endian header length, a JSON header
/// {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}}, then the data.
/// The format PyTorch's ecosystem loads, and what idx writes its model in.
public struct SafeTensors {
    public struct Tensor { public var shape: [Int]; public var data: [Float] }
    public var metadata: [String: String] = [:]
    public var tensors: [String: Tensor] = [:]
    public var order: [String] = []  // names in file order

    public init() {}

    public mutating func add(_ name: String, shape: [Int], data: [Float]) {
        precondition(shape.reduce(1, *) == data.count)
        if tensors[name] == nil { order.append(name) }
        tensors[name] = Tensor(shape: shape, data: data)
    }

    public func serialized() -> Data {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for name in order {
            let t = tensors[name]!
            header[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + 4 * t.data.count]]
            offset += 4 * t.data.count
        }
        var json = try! JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for name in order {
            tensors[name]!.data.withUnsafeBytes { out.append(contentsOf: $0) }  // little-endian host
        }
        return out
    }

    /// Reads and validates a file; errors name the file and what is wrong.
    public static func read(path: String) throws -> SafeTensors {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw IdxError("\(path): cannot read the file; check that it exists (was the training run finished or checkpointed?).")
        }
        return try parse(data, path: path)
    }

    public static func parse(_ data: Data, path: String) throws -> SafeTensors {
        func bad(_ why: String) -> IdxError {
            IdxError("\(path): not a valid safetensors file (\(why)); it may be truncated or damaged: retrain or restore it.")
        }
        guard data.count >= 8 else { throw bad("shorter than its 8-byte header") }
        let n = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n <= UInt64(data.count - 8) else { throw bad("header length \(n) beyond the end of the file") }
        let body = 8 + Int(n)
        guard let obj = try? JSONSerialization.jsonObject(with: data.subdata(in: 8 ..< body)),
              let header = obj as? [String: Any] else { throw bad("header is not a JSON object") }
        var st = SafeTensors()
        if let meta = header["__metadata__"] {
            guard let m = meta as? [String: String] else { throw bad("__metadata__ is not a string map") }
            st.metadata = m
        }
        var entries: [(String, [Int], Int, Int)] = []
        for (name, value) in header where name != "__metadata__" {
            guard let e = value as? [String: Any], let dtype = e["dtype"] as? String,
                  let shape = e["shape"] as? [Int], let offs = e["data_offsets"] as? [Int], offs.count == 2
            else { throw bad("entry \(name) is malformed") }
            guard dtype == "F32" else { throw bad("tensor \(name) has dtype \(dtype); idx reads F32 only") }
            // Overflow-checked: a shape whose product overflows must be an error, not a trap.
            var count = 1
            for d in shape {
                let (p, overflow) = count.multipliedReportingOverflow(by: d)
                guard d >= 0, !overflow, p <= (data.count - body) / 4 else {
                    throw bad("tensor \(name) has shape \(shape), more values than the file holds")
                }
                count = p
            }
            guard offs[0] >= 0, offs[1] >= offs[0], offs[1] <= data.count - body, offs[1] - offs[0] == 4 * count else {
                throw bad("tensor \(name) lies outside the file or does not match its shape")
            }
            entries.append((name, shape, offs[0], count))
        }
        entries.sort { $0.2 < $1.2 }
        for (name, shape, off, count) in entries {
            var values = [Float](repeating: 0, count: count)
            values.withUnsafeMutableBytes { dst in
                data.withUnsafeBytes { src in
                    dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[(body + off) ..< (body + off + 4 * count)]))
                }
            }
            st.order.append(name)
            st.tensors[name] = Tensor(shape: shape, data: values)
        }
        return st
    }
}
