import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Keeps two writers apart: two nightly runs (`<state>/nightly.lock`), or two commands
/// writing one output folder (`OutputLock`). The lock is an flock(2) on a lock file,
/// which the kernel drops when its holder dies, however it dies; the file also
/// holds the holder's PID and start time, so a run that finds the lock taken can
/// say who holds it, and a run that finds a lock file left by a dead process
/// (PID gone, `kill(pid, 0)` fails, or the PID was reused by a process started
/// later) says it took that stale lock over.
public final class ProcessLock {
    public let path: String
    private var fd: Int32 = -1
    private let removeOnRelease: Bool
    /// The holder recorded in the file when we took it, if that process is dead.
    public private(set) var recoveredFrom: Holder?

    public struct Holder: Equatable, CustomStringConvertible {
        public var pid: Int32
        public var startTime: UInt64 // clock ticks since boot (/proc/<pid>/stat field 22)
        public var startedAt: String
        public var description: String { "pid \(pid) (started \(startedAt))" }
        public init(pid: Int32, startTime: UInt64, startedAt: String) {
            self.pid = pid; self.startTime = startTime; self.startedAt = startedAt
        }
    }

    /// Takes the lock or throws naming the live holder. `holderKind` says what holds such a
    /// lock, for the message ("idx nightly run", "idx ingest writing corpora/movies").
    /// The file is opened without following a symbolic link (a link planted at the lock's
    /// path would have its target truncated) and must be a regular file.
    /// `removeOnRelease`: unlink the file when released (an output folder's lock beside it
    /// must not litter its parent); taking such a lock checks that the file it locked is still
    /// the one at `path`, so a holder that unlinked it in between cannot give two owners.
    /// `wait`: block until the holder releases it instead of throwing (for locks held briefly).
    public init(path: String, now: Date = Date(), holderKind: String = "idx nightly run", removeOnRelease: Bool = false,
                wait: Bool = false) throws {
        self.path = path
        self.removeOnRelease = removeOnRelease
        try AtomicFile.createParent(of: path)
        var attempts = 0
        while true {
            let (fd, previous) = try Self.lockedDescriptor(path, holderKind: holderKind, wait: wait)
            var held = stat(), there = stat()
            if !removeOnRelease || (fstat(fd, &held) == 0 && lstat(path, &there) == 0 && held.st_ino == there.st_ino && held.st_dev == there.st_dev) {
                self.fd = fd
                recoveredFrom = previous.flatMap { $0.pid != getpid() && !Self.isAlive($0) ? $0 : nil }
                break
            }
            close(fd)  // unlinked by its previous holder after we opened it: lock the new file
            attempts += 1
            if attempts > 100 { throw IdxError("\(path): the lock file keeps being replaced; is another idx run looping? Try again.") }
        }
        let me = Holder(pid: getpid(), startTime: Self.startTime(of: getpid()) ?? 0,
                        startedAt: ISO8601DateFormatter().string(from: now))
        let text = "\(me.pid) \(me.startTime) \(me.startedAt)\n"
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
        _ = fsync(fd)
    }

    /// Opens the lock file (never through a link, only a regular file) and takes the flock;
    /// returns it with the holder the file recorded before.
    private static func lockedDescriptor(_ path: String, holderKind: String, wait: Bool) throws -> (Int32, Holder?) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0o644)
        guard fd >= 0 else {
            if errno == ELOOP {
                throw IdxError("\(path): the lock file is a symbolic link; idx never follows one there. Remove the link (rm \(path)) and run again.")
            }
            throw IdxError("\(path): cannot open the lock file: \(String(cString: strerror(errno))).")
        }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw IdxError("\(path): the lock file is not a regular file (\(FileKind.describe(path))); remove it and run again.")
        }
        let previous = Self.readHolder(fd: fd)
        if flock(fd, wait ? LOCK_EX : LOCK_EX | LOCK_NB) != 0 {
            close(fd)
            let who = previous.map { " (\($0))" } ?? ""
            throw IdxError("another \(holderKind)\(who) holds \(path); wait for it to finish (the lock frees itself if that process dies).")
        }
        return (fd, previous)
    }

    /// Empties the file (or removes it) and drops the lock.
    public func release() {
        guard fd >= 0 else { return }
        if removeOnRelease { unlink(path) }
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
