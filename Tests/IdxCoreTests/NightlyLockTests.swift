import Foundation
import XCTest
import IdxNightly

final class NightlyLockTests: XCTestCase {
    func testSecondHolderIsRefusedAndReleaseFrees() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("idx-lock-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try NightlyLock(path: dir + "/nightly.lock")
        XCTAssertNil(a.recoveredFrom)
        XCTAssertThrowsError(try NightlyLock(path: dir + "/nightly.lock")) { e in
            XCTAssertTrue("\(e)".contains("pid \(getpid())"), "\(e)")
        }
        a.release()
        let b = try NightlyLock(path: dir + "/nightly.lock")
        XCTAssertNil(b.recoveredFrom)
        b.release()
    }

    func testStaleLockOfDeadProcessIsTakenOver() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("idx-lock-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // A process that wrote the lock and died without releasing it (as after kill -9).
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "echo \"$$ $(cut -d' ' -f22 /proc/$$/stat) 2026-01-01T00:00:00Z\" > '\(dir)/nightly.lock'; kill -9 $$"]
        try p.run()
        p.waitUntilExit()
        let text = try String(contentsOfFile: dir + "/nightly.lock", encoding: .utf8)
        let dead = Int32(text.split(separator: " ")[0])!
        XCTAssertFalse(NightlyLock.isAlive(NightlyLock.Holder(pid: dead, startTime: UInt64(text.split(separator: " ")[1])!, startedAt: "")))
        let lock = try NightlyLock(path: dir + "/nightly.lock")
        XCTAssertEqual(lock.recoveredFrom?.pid, dead)
        // The file now names us.
        let now = try String(contentsOfFile: dir + "/nightly.lock", encoding: .utf8)
        XCTAssertTrue(now.hasPrefix("\(getpid()) "))
        lock.release()
        // A live holder's record (our own pid and start time) is not called stale.
        XCTAssertTrue(NightlyLock.isAlive(NightlyLock.Holder(pid: getpid(), startTime: NightlyLock.startTime(of: getpid())!, startedAt: "")))
        // A reused pid (same pid, other start time) is.
        XCTAssertFalse(NightlyLock.isAlive(NightlyLock.Holder(pid: getpid(), startTime: 1, startedAt: "")))
    }
}
