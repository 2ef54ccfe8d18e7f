import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Keeps two nightly runs apart. The lock is an flock(2) on `<state>/nightly.lock`,
/// which the kernel drops when its holder dies, however it dies; the file also
/// holds the holder's PID and start time, so a run that finds the lock taken can
/// say who holds it, and a run that finds a lock file left by a dead process
/// (PID gone, `kill(pid, 0)` fails, or the PID was reused by a process started
/// later) says it took that stale lock over.
public final class NightlyLock {
    public let path: String
    private var fd: Int32
    /// The holder recorded in the file when we took it, if that process is dead.
    public let recoveredFrom: Holder?

    public struct Holder: Equatable, CustomStringConvertible {
        public var pid: Int32
        public var startTime: UInt64 // clock ticks since boot (/proc/<pid>/stat field 22)
        public var startedAt: String
        public var description: String { "pid \(pid) (started \(startedAt))" }
    }

    /// Takes the lock or throws naming the live holder.
    public init(path: String, now: Date = Date()) throws {
        self.path = path
        try AtomicFile.createParent(of: path)
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw IdxError("\(path): cannot open the lock file: \(String(cString: strerror(errno))).")
        }
        let previous = Self.readHolder(fd: fd)
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            close(fd)
            let who = previous.map { " by \($0)" } ?? ""
            throw IdxError("another idx nightly run holds \(path)\(who); wait for it to finish (the lock frees itself if that process dies).")
        }
        self.fd = fd
        if let previous, previous.pid != getpid() {
            recoveredFrom = Self.isAlive(previous) ? nil : previous
        } else {
            recoveredFrom = nil
        }
        let me = Holder(pid: getpid(), startTime: Self.startTime(of: getpid()) ?? 0,
                        startedAt: ISO8601DateFormatter().string(from: now))
        let text = "\(me.pid) \(me.startTime) \(me.startedAt)\n"
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
        _ = fsync(fd)
    }

    /// Empties the file and drops the lock.
    public func release() {
        guard fd >= 0 else { return }
        _ = ftruncate(fd, 0)
        flock(fd, LOCK_UN)
        close(fd)
        fd = -1
    }

    deinit { release() }

    static func readHolder(fd: Int32) -> Holder? {
        var buf = [UInt8](repeating: 0, count: 256)
        let n = pread(fd, &buf, buf.count, 0)
        guard n > 0, let text = String(bytes: buf[0 ..< n], encoding: .utf8) else { return nil }
        let parts = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ")
        guard parts.count >= 2, let pid = Int32(parts[0]), let start = UInt64(parts[1]) else { return nil }
        return Holder(pid: pid, startTime: start, startedAt: parts.count > 2 ? String(parts[2]) : "?")
    }

    /// True when `holder.pid` runs and is the same process (same start time).
    public static func isAlive(_ holder: Holder) -> Bool {
        guard holder.pid > 0 else { return false }
        if kill(holder.pid, 0) != 0 && errno == ESRCH { return false }
        if let now = startTime(of: holder.pid), holder.startTime != 0, now != holder.startTime { return false }
        return true
    }

    /// Field 22 of /proc/<pid>/stat: the process start time in clock ticks since boot.
    public static func startTime(of pid: Int32) -> UInt64? {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = s.lastIndex(of: ")") else { return nil }
        // Fields after the command name (which may hold spaces) start at field 3.
        let fields = s[s.index(after: close)...].split(separator: " ")
        guard fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }
}
