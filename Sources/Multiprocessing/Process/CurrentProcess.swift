import CMultiprocessing
import Glibc
import Synchronization

/// Facts about the running process (Python's `current_process()` and `parent_process()`).
public enum CurrentProcess {
    private static let childName = Mutex<String?>(nil)

    /// This process's name: the ``ChildProcess/name`` it was started with, or `MainProcess`
    /// in a program that was not started by this library.
    public static var name: String { childName.withLock { $0 } ?? "MainProcess" }

    /// Whether this process was started by this library (runs a target or a function).
    public static var isChild: Bool { childName.withLock { $0 } != nil }

    /// This process's id.
    public static var id: pid_t { getpid() }

    /// The id of the process that started this one.
    public static var parentID: pid_t { getppid() }

    /// The number of CPUs this process may run on (Python's `cpu_count()`, but honouring
    /// the affinity mask as `os.process_cpu_count()` does).
    public static var cpuCount: Int {
        Int(mp_cpu_count())
    }

    /// The children this process started that are still running (Python's
    /// `active_children()`): each is checked, and those that have ended are reaped.
    /// Children whose ``ChildProcess`` was released are not listed (they are reaped when
    /// they end).
    public static var activeChildren: [ChildProcess] {
        ChildRegistry.shared.objects.filter(\.isAlive).sorted { ($0.pid ?? 0) < ($1.pid ?? 0) }
    }

    static func setName(_ name: String) { childName.withLock { $0 = name } }
}
