import CSupport
import Foundation

/// A child idx started by another idx (the nightly job's `idx train`) ends when its parent
/// does, however the parent ends: the parent sets `IDX_PARENT_PID`, the child asks the
/// kernel for SIGKILL on the parent's death.
public enum ChildProcess {
    public static let parentVariable = "IDX_PARENT_PID"

    /// Call first thing in a command a parent idx may start. Exits at once when the parent
    /// is already gone.
    public static func dieWithParentIfAsked() {
        guard let pid = ProcessInfo.processInfo.environment[parentVariable].flatMap({ Int32($0) }) else { return }
        if idx_die_with_parent(pid) == 1 { exit(1) }
    }
}
