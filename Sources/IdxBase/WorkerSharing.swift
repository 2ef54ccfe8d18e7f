import Foundation

/// A value handed to the workers of `DispatchQueue.concurrentPerform` that Swift cannot prove
/// safe to share: a read-only pointer, or a pointer into a buffer of which each worker writes
/// only its own part. `@unchecked`: that discipline is the caller's, and is stated where a
/// value is wrapped.
public struct SharedWithWorkers<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}

/// The first error thrown by any of several concurrent workers.
public final class FirstError: @unchecked Sendable {  // `error` only under `lock`
    private let lock = NSLock()
    private var error: Error?

    public init() {}

    /// Keeps `e` unless an error is already kept.
    public func record(_ e: Error) {
        lock.lock(); if error == nil { error = e }; lock.unlock()
    }

    /// Throws the kept error, if any.
    public func rethrow() throws {
        lock.lock(); let e = error; lock.unlock()
        if let e { throw e }
    }
}

/// The cores this process may run on, read once: Foundation reads the cgroup's files on every
/// `activeProcessorCount`, which a search asking for "every core" paid on every query.
public enum Cores {
    public static let available = max(1, ProcessInfo.processInfo.activeProcessorCount)
}

/// `(0 ..< n).map(body)` over every core, results in order; the first error thrown is rethrown.
/// `body` runs on several threads at once: it must be safe to call so.
public enum ParallelMap {
    public static func map<T>(_ n: Int, _ body: (Int) throws -> T) throws -> [T] {
        if n <= 1 { return try (0 ..< n).map(body) }
        var results = [T?](repeating: nil, count: n)
        let failure = FirstError()
        try withoutActuallyEscaping(body) { body in
            let work = SharedWithWorkers(body)
            results.withUnsafeMutableBufferPointer { out in
                // Each worker writes only the slots of the indices it takes.
                let slots = SharedWithWorkers(out)
                DispatchQueue.concurrentPerform(iterations: n) { i in
                    do { slots.value[i] = try work.value(i) } catch { failure.record(error) }
                }
            }
            try failure.rethrow()
        }
        return results.map { $0! }
    }
}
