import CMultiprocessing
import Glibc
import Synchronization
import Testing

@testable import Multiprocessing

// MARK: - Helpers

/// A counter in shared memory, incremented without atomics (read, pause, write): only
/// mutual exclusion keeps its count exact.
struct SharedCounter: Codable, Sendable {
    let region: SharedRegion

    init() throws { region = try SharedRegion(size: 64) }

    private var word: UnsafeMutablePointer<Int> { region.base.assumingMemoryBound(to: Int.self) }

    var value: Int { word.pointee }

    /// Adds one, racily: two unguarded callers lose updates.
    func incrementRacily() {
        let old = word.pointee
        sched_yield()
        word.pointee = old + 1
    }

    private var atomicWord: UnsafeMutablePointer<UInt32> { region.base.assumingMemoryBound(to: UInt32.self) }

    /// Adds one atomically (for counting events, not for testing exclusion).
    func incrementAtomically() {
        _ = mp_atomic_add32(atomicWord, 1)
    }

    /// Adds one atomically; returns the new value.
    func incrementAtomicallyReturning() -> Int {
        Int(mp_atomic_add32(atomicWord, 1)) + 1
    }

    func decrementAtomically() {
        _ = mp_atomic_add32(atomicWord, UInt32.max)
    }

    /// Raises the stored value to `value` (a compare-and-swap loop).
    func raise(to value: Int) {
        while true {
            let current = mp_atomic_load32(atomicWord)
            if current >= UInt32(value) || mp_atomic_compare_exchange32(atomicWord, current, UInt32(value)) { return }
        }
    }

    var atomicValue: UInt32 { mp_atomic_load32(atomicWord) }
}

/// Starts `count` children running `target`, with both start methods in turn.
func startChildren<Target: ProcessTarget>(_ count: Int, _ target: Target) throws -> [ChildProcess] {
    try (0..<count).map { index in
        let child = ChildProcess(target, isDaemon: true, startMethod: index.isMultiple(of: 2) ? .spawn : .forkserver)
        try child.start()
        return child
    }
}

/// Joins every child within `timeout` (killing the late ones) and expects success.
func expectAllSucceed(_ children: [ChildProcess], within timeout: Duration = .seconds(60)) {
    for child in children {
        do {
            let ended = try child.join(timeout: timeout)
            if !ended { child.kill() }
            #expect(ended, "child \(child.pid ?? 0) did not end in time")
        } catch {
            Issue.record("child failed: \(error)")
        }
    }
}

struct SyncFailure: Error, Codable, CustomStringConvertible {
    var description: String
}

// MARK: - Targets run in children

struct IncrementUnderLock: ProcessTarget {
    var lock: ProcessLock
    var counter: SharedCounter
    var times: Int
    func run() throws {
        for _ in 0..<times { try lock.withLock { counter.incrementRacily() } }
    }
}

struct IncrementUnderRecursiveLock: ProcessTarget {
    var lock: RecursiveProcessLock
    var counter: SharedCounter
    var times: Int
    func run() throws {
        for _ in 0..<times {
            try lock.withLock { try lock.withLock { counter.incrementRacily() } }
        }
    }
}

/// Takes the lock, says so, and sleeps holding it until killed.
struct HoldLockForever: ProcessTarget {
    var lock: ProcessLock
    var holding: ProcessEvent
    func run() throws {
        try lock.acquire()
        holding.set()
        while true { sleep(10) }
    }
}

struct HoldRecursiveLockForever: ProcessTarget {
    var lock: RecursiveProcessLock
    var holding: ProcessEvent
    func run() throws {
        try lock.acquire()
        try lock.acquire()
        holding.set()
        while true { sleep(10) }
    }
}

struct ReleaseUnheldLock: ProcessTarget {
    var lock: ProcessLock
    func run() { lock.release() }
}

struct SemaphoreWorker: ProcessTarget {
    var semaphore: ProcessSemaphore
    var inside: SharedCounter
    var maximum: SharedCounter
    var times: Int
    func run() throws {
        for _ in 0..<times {
            guard semaphore.acquire(timeout: .seconds(30)) else { throw SyncFailure(description: "acquire timed out") }
            let now = inside.incrementAtomicallyReturning()
            maximum.raise(to: now)
            usleep(200)
            inside.decrementAtomically()
            semaphore.release()
        }
    }
}

/// Waits for `go`, then sets `answer`.
struct EchoEvent: ProcessTarget {
    var go: ProcessEvent
    var answer: ProcessEvent
    func run() throws {
        guard go.wait(timeout: .seconds(30)) else { throw SyncFailure(description: "go never came") }
        answer.set()
    }
}

/// Waits once on the condition; counts itself in `woken` if notified.
struct WaitOnCondition: ProcessTarget {
    var condition: ProcessCondition
    var woken: SharedCounter
    var timeout: Double
    func run() throws {
        let notified = try condition.withLock { try condition.wait(timeout: .seconds(timeout)) }
        if notified { woken.incrementAtomically() }
    }
}

/// Waits many times on async forms (events, semaphores, locks, barriers) while checking
/// that other tasks still run: if each wait held a thread of the cooperative pool, nothing
/// else could run and this would hang (the test's timed join fails it).
struct AsyncSyncWaitsLeavePoolFree: ProcessTarget {
    var event: ProcessEvent
    var semaphore: ProcessSemaphore
    var lock: ProcessLock
    var barrier: ProcessBarrier  // 9 parties: 8 tasks and this one
    func run() async throws {
        let count = 32
        try lock.acquire()
        let waits = Task {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<count {
                    group.addTask {
                        switch index % 4 {
                        case 0: try await event.wait()
                        case 1: try await semaphore.acquire()
                        case 2: try await lock.withLock {}
                        default: _ = try await barrier.wait(timeout: .seconds(30))
                        }
                        return 1
                    }
                }
                return try await group.reduce(0, +)
            }
        }
        try await Task.sleep(for: .milliseconds(200))
        let others = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<200 { group.addTask { 1 } }
            return await group.reduce(0, +)
        }
        event.set()
        semaphore.release(count: count)
        lock.release()
        _ = try await barrier.wait(timeout: .seconds(30))
        let done = try await waits.value
        guard others == 200, done == count else {
            throw SyncFailure(description: "others \(others), done \(done)")
        }
    }
}

// MARK: - Tests

@Suite("Process locks", .timeLimit(.minutes(2)))
struct ProcessLockTests {
    @Test("threads and processes at once never overlap under the lock")
    func mutualExclusion() throws {
        let lock = try ProcessLock()
        let counter = try SharedCounter()
        let children = try startChildren(3, IncrementUnderLock(lock: lock, counter: counter, times: 300))
        let threads = (0..<3).map { _ in
            TestThread {
                for _ in 0..<300 { try? lock.withLock { counter.incrementRacily() } }
            }
        }
        for thread in threads { thread.join() }
        expectAllSucceed(children)
        #expect(counter.value == 1800)
    }

    @Test("a holder killed by SIGKILL: the next acquirer is told within 1 s and the lock works again")
    func holderKilled() throws {
        let lock = try ProcessLock()
        let holding = try ProcessEvent()
        let child = ChildProcess(HoldLockForever(lock: lock, holding: holding), isDaemon: true)
        try child.start()
        #expect(holding.wait(timeout: .seconds(30)))
        #expect(try !lock.acquire(timeout: .milliseconds(50)))
        child.kill()
        let start = ContinuousClock.now
        let error = #expect(throws: ProcessLockError.self) { _ = try lock.acquire(timeout: .seconds(1)) }
        #expect(ContinuousClock.now - start < .seconds(1))
        #expect(error == .previousOwnerDied(pid: child.pid))
        #expect(lock.isHeldByCurrentThread, "the lock is held when owner death is reported")
        lock.release()
        #expect(try lock.tryAcquire())
        lock.release()
        try lock.withLock {}
        _ = try? child.join(timeout: .seconds(10))
    }

    @Test("withLock after a holder's death throws, releases, and the next call works")
    func withLockAfterDeath() throws {
        let lock = try ProcessLock()
        let holding = try ProcessEvent()
        let child = ChildProcess(
            HoldLockForever(lock: lock, holding: holding), isDaemon: true, startMethod: .forkserver)
        try child.start()
        #expect(holding.wait(timeout: .seconds(30)))
        child.kill()
        _ = try? child.join(timeout: .seconds(10))
        var ran = false
        #expect(throws: ProcessLockError.previousOwnerDied(pid: child.pid)) { try lock.withLock { ran = true } }
        #expect(!ran)
        #expect(!lock.isHeldByCurrentThread)
        #expect(try lock.withLock { 42 } == 42)
    }

    @Test("timeouts: zero and negative return at once, positive waits, all false while held elsewhere")
    func timeouts() throws {
        let lock = try ProcessLock()
        let taken = ThreadSignal()
        let done = ThreadSignal()
        let holder = TestThread {
            try? lock.acquire()
            taken.fire()
            done.wait()
            lock.release()
        }
        taken.wait()
        let clock = ContinuousClock()
        for timeout: Duration in [.zero, .milliseconds(-5)] {
            let start = clock.now
            #expect(try !lock.acquire(timeout: timeout))
            let elapsed = clock.now - start
            #expect(elapsed < .seconds(1))
        }
        #expect(try !lock.tryAcquire())
        let start = clock.now
        #expect(try !lock.acquire(timeout: .milliseconds(150)))
        let elapsed = clock.now - start
        #expect(elapsed >= .milliseconds(150))
        done.fire()
        holder.join()
        #expect(try lock.acquire(timeout: .zero))
        lock.release()
    }

    @Test("taking it again on the holding thread throws instead of deadlocking")
    func notReentrant() throws {
        let lock = try ProcessLock()
        try lock.acquire()
        #expect(throws: ProcessLockError.alreadyHeldByCurrentThread) { try lock.acquire() }
        #expect(throws: ProcessLockError.alreadyHeldByCurrentThread) { _ = try lock.tryAcquire() }
        lock.release()
    }

    @Test("releasing a lock one does not hold is a precondition failure")
    func releaseByNonOwner() throws {
        let lock = try ProcessLock()
        let child = ChildProcess(ReleaseUnheldLock(lock: lock))
        try child.start()
        let error = try #require(throws: ChildProcessError.self) { _ = try child.join(timeout: .seconds(60)) }
        guard case .signaled(let signal) = error.termination else {
            Issue.record("expected a signal, got \(error.termination)")
            return
        }
        #expect([ProcessSignal.illegalInstruction, .trap].contains(signal))
    }

    @Test("async withLock waits off the pool and a cancelled wait throws CancellationError")
    func asyncCancellation() async throws {
        let lock = try ProcessLock()
        let release = ThreadSignal()
        let taken = ThreadSignal()
        let holder = TestThread {
            try? lock.acquire()
            taken.fire()
            release.wait()
            lock.release()
        }
        taken.wait()
        let waiter = Task { try await lock.withLock { 1 } }
        try await Task.sleep(for: .milliseconds(100))
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        let second = Task { try await lock.withLock { 2 } }
        try await Task.sleep(for: .milliseconds(100))
        release.fire()
        #expect(try await second.value == 2)
        holder.join()
    }
}

@Suite("Recursive process locks", .timeLimit(.minutes(2)))
struct RecursiveProcessLockTests {
    @Test("the holding thread takes it again and counts; others wait until the last release")
    func counts() throws {
        let lock = try RecursiveProcessLock()
        try lock.acquire()
        try lock.acquire()
        #expect(try lock.tryAcquire())
        #expect(lock.recursionCount == 3)
        let other = Mutex<[Bool]>([])
        TestThread {
            let got = (try? lock.tryAcquire()) ?? true
            other.withLock { $0.append(got) }
            #expect(lock.recursionCount == 0)
        }.join()
        lock.release()
        lock.release()
        #expect(lock.recursionCount == 1)
        lock.release()
        #expect(!lock.isHeldByCurrentThread)
        TestThread {
            let got = (try? lock.acquire(timeout: .seconds(5))) ?? false
            other.withLock { $0.append(got) }
            if got { lock.release() }
        }.join()
        #expect(other.withLock { $0 } == [false, true])
    }

    @Test("timeouts: zero and negative at once, positive waits, while another thread holds it")
    func timeouts() throws {
        let lock = try RecursiveProcessLock()
        let taken = ThreadSignal()
        let done = ThreadSignal()
        let holder = TestThread {
            try? lock.acquire()
            taken.fire()
            done.wait()
            lock.release()
        }
        taken.wait()
        #expect(try !lock.acquire(timeout: .zero))
        #expect(try !lock.acquire(timeout: .milliseconds(-1)))
        #expect(try !lock.tryAcquire())
        let start = ContinuousClock.now
        #expect(try !lock.acquire(timeout: .milliseconds(100)))
        #expect(ContinuousClock.now - start >= .milliseconds(100))
        done.fire()
        holder.join()
        #expect(try lock.acquire(timeout: .seconds(5)))
        #expect(try lock.acquire(timeout: .zero), "the holder takes it again at once")
        #expect(lock.recursionCount == 2)
        lock.release()
        lock.release()
    }

    @Test("async withLock runs its body holding the lock, off the calling task's thread")
    func asyncWithLock() async throws {
        let lock = try RecursiveProcessLock()
        let inside = try await lock.withLock { lock.isHeldByCurrentThread && lock.recursionCount == 1 }
        #expect(inside)
        #expect(!lock.isHeldByCurrentThread)
    }

    @Test("threads and processes at once never overlap under it")
    func mutualExclusion() throws {
        let lock = try RecursiveProcessLock()
        let counter = try SharedCounter()
        let children = try startChildren(2, IncrementUnderRecursiveLock(lock: lock, counter: counter, times: 300))
        let threads = (0..<2).map { _ in
            TestThread {
                for _ in 0..<300 { try? lock.withLock { try lock.withLock { counter.incrementRacily() } } }
            }
        }
        for thread in threads { thread.join() }
        expectAllSucceed(children)
        #expect(counter.value == 1200)
    }

    @Test("a holder killed holding it twice: the next acquirer is told and holds it once")
    func holderKilled() throws {
        let lock = try RecursiveProcessLock()
        let holding = try ProcessEvent()
        let child = ChildProcess(HoldRecursiveLockForever(lock: lock, holding: holding), isDaemon: true)
        try child.start()
        #expect(holding.wait(timeout: .seconds(30)))
        child.kill()
        #expect(throws: ProcessLockError.previousOwnerDied(pid: child.pid)) {
            _ = try lock.acquire(timeout: .seconds(1))
        }
        #expect(lock.recursionCount == 1)
        lock.release()
        #expect(!lock.isHeldByCurrentThread)
        try lock.withLock {}
        _ = try? child.join(timeout: .seconds(10))
    }
}

@Suite("Process semaphores", .timeLimit(.minutes(2)))
struct ProcessSemaphoreTests {
    @Test("never more than its value inside, from threads and processes at once")
    func limitsConcurrency() throws {
        let semaphore = try ProcessSemaphore(value: 2)
        let inside = try SharedCounter()
        let maximum = try SharedCounter()
        let worker = SemaphoreWorker(semaphore: semaphore, inside: inside, maximum: maximum, times: 100)
        let children = try startChildren(3, worker)
        let threads = (0..<2).map { _ in TestThread { try? worker.run() } }
        for thread in threads { thread.join() }
        expectAllSucceed(children)
        #expect(maximum.atomicValue <= 2)
        #expect(maximum.atomicValue >= 1)
        #expect(semaphore.value == 2)
    }

    @Test("timeouts: zero and negative at once, positive waits; value counts")
    func timeouts() throws {
        let semaphore = try ProcessSemaphore(value: 1)
        #expect(semaphore.tryAcquire())
        #expect(semaphore.value == 0)
        #expect(!semaphore.tryAcquire())
        #expect(!semaphore.acquire(timeout: .zero))
        #expect(!semaphore.acquire(timeout: .milliseconds(-1)))
        let elapsed = ContinuousClock().measure { #expect(!semaphore.acquire(timeout: .milliseconds(120))) }
        #expect(elapsed >= .milliseconds(120))
        semaphore.release(count: 3)
        #expect(semaphore.value == 3)
        onNewThread(after: .milliseconds(50)) { semaphore.release() }
        for _ in 0..<4 { #expect(semaphore.acquire(timeout: .seconds(10))) }
    }

    @Test("a bounded semaphore refuses a release above its initial value, and changes nothing")
    func bounded() throws {
        let semaphore = try BoundedProcessSemaphore(value: 2)
        #expect(semaphore.bound == 2)
        #expect(throws: ProcessSemaphoreError.releasedTooManyTimes(bound: 2)) { try semaphore.release() }
        #expect(semaphore.tryAcquire())
        #expect(throws: ProcessSemaphoreError.releasedTooManyTimes(bound: 2)) { try semaphore.release(count: 2) }
        #expect(semaphore.value == 1)
        try semaphore.release()
        #expect(semaphore.value == 2)
        #expect(ProcessSemaphoreError.releasedTooManyTimes(bound: 2).description.contains("bound is 2"))
    }

    @Test("async acquire: suspends, is woken by a release, and a cancelled one takes nothing")
    func asyncForms() async throws {
        let semaphore = try ProcessSemaphore(value: 0)
        #expect(try await !semaphore.acquire(timeout: .zero))
        #expect(try await !semaphore.acquire(timeout: .milliseconds(60)))
        let cancelled = Task { try await semaphore.acquire() }
        try await Task.sleep(for: .milliseconds(50))
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        let waiter = Task { try await semaphore.acquire(timeout: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(50))
        semaphore.release()
        #expect(try await waiter.value)
        #expect(semaphore.value == 0)
    }
}

@Suite("Process events", .timeLimit(.minutes(2)))
struct ProcessEventTests {
    @Test("set, clear, isSet, and timeouts")
    func basics() throws {
        let event = try ProcessEvent()
        #expect(!event.isSet)
        #expect(!event.wait(timeout: .zero))
        #expect(!event.wait(timeout: .milliseconds(-3)))
        let elapsed = ContinuousClock().measure { #expect(!event.wait(timeout: .milliseconds(100))) }
        #expect(elapsed >= .milliseconds(100))
        event.set()
        #expect(event.isSet)
        #expect(event.wait(timeout: .zero))
        event.wait()
        event.clear()
        #expect(!event.isSet)
    }

    @Test("an event set in one process wakes waiters in others, and threads")
    func acrossProcesses() throws {
        let go = try ProcessEvent()
        let answers = try (0..<3).map { _ in try ProcessEvent() }
        let children = try answers.enumerated().map { index, answer in
            let child = ChildProcess(
                EchoEvent(go: go, answer: answer), isDaemon: true,
                startMethod: index.isMultiple(of: 2) ? .spawn : .forkserver)
            try child.start()
            return child
        }
        let thread = TestThread { #expect(go.wait(timeout: .seconds(30))) }
        usleep(100_000)
        for answer in answers { #expect(!answer.isSet) }
        go.set()
        thread.join()
        for answer in answers { #expect(answer.wait(timeout: .seconds(30))) }
        expectAllSucceed(children)
    }

    @Test("async wait: woken by set, and a cancelled wait throws CancellationError")
    func asyncForms() async throws {
        let event = try ProcessEvent()
        #expect(try await !event.wait(timeout: .zero))
        let cancelled = Task { try await event.wait() }
        try await Task.sleep(for: .milliseconds(50))
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        let waiter = Task { try await event.wait(timeout: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(50))
        event.set()
        #expect(try await waiter.value)
    }

    @Test("async waits on events, semaphores, locks and barriers leave the cooperative pool free")
    func poolStaysFree() throws {
        let child = ChildProcess(
            AsyncSyncWaitsLeavePoolFree(
                event: try ProcessEvent(), semaphore: try ProcessSemaphore(value: 0), lock: try ProcessLock(),
                barrier: try ProcessBarrier(parties: 9)))
        try child.start()
        let ended = try child.join(timeout: .seconds(60))
        if !ended { child.kill() }
        #expect(ended, "the waits held the cooperative pool: nothing else could run")
    }
}

@Suite("Process conditions", .timeLimit(.minutes(2)))
struct ProcessConditionTests {
    @Test("notify(n) wakes exactly n of the waiting threads and processes; notifyAll wakes the rest")
    func notifyExactly() throws {
        let condition = try ProcessCondition()
        let woken = try SharedCounter()
        let waiter = WaitOnCondition(condition: condition, woken: woken, timeout: 30)
        let children = try startChildren(3, waiter)
        let threads = (0..<2).map { _ in TestThread { #expect(throws: Never.self) { try waiter.run() } } }
        #expect(eventually(within: .seconds(30)) { condition.waitingCount == 5 })
        try condition.withLock { condition.notify(2) }
        #expect(eventually(within: .seconds(10)) { woken.atomicValue == 2 })
        usleep(300_000)
        #expect(woken.atomicValue == 2, "notify(2) woke more than 2")
        #expect(condition.waitingCount == 3)
        try condition.withLock { condition.notify() }
        #expect(eventually(within: .seconds(10)) { woken.atomicValue == 3 })
        usleep(200_000)
        #expect(woken.atomicValue == 3)
        try condition.withLock { condition.notifyAll() }
        expectAllSucceed(children)
        for thread in threads { thread.join() }
        #expect(woken.atomicValue == 5)
    }

    @Test("a notification with nobody waiting is not remembered")
    func notRemembered() throws {
        let condition = try ProcessCondition(lock: try ProcessLock())
        try condition.withLock { condition.notifyAll() }
        try condition.withLock { condition.notify(3) }
        let notified = try condition.withLock { try condition.wait(timeout: .milliseconds(100)) }
        #expect(!notified)
        let child = ChildProcess(WaitOnCondition(condition: condition, woken: try SharedCounter(), timeout: 0.2))
        try child.start()
        #expect(try child.join(timeout: .seconds(60)))
    }

    @Test("a waiter killed while waiting is counted out: notifications go to the living, none is kept")
    func deadWaiter() throws {
        let condition = try ProcessCondition()
        let child = ChildProcess(
            WaitOnCondition(condition: condition, woken: try SharedCounter(), timeout: 30), isDaemon: true)
        try child.start()
        #expect(eventually(within: .seconds(30)) { condition.waitingCount == 1 })
        // Counted as waiting a moment before it lets the lock go: killed in between, it would
        // die holding the lock, and the living waiter's `withLock` would fail (a busy
        // repetition did that). Taking the lock here waits for the release.
        try condition.withLock {}
        child.kill()
        _ = try? child.join(timeout: .seconds(10))
        let woken = Mutex(false)
        let living = TestThread {
            let notified = (try? condition.withLock { try condition.wait(timeout: .seconds(30)) }) ?? false
            woken.withLock { $0 = notified }
        }
        // Both counted, then the living waiter counts the dead one out.
        #expect(eventually(within: .seconds(10)) { condition.waitingCount == 2 })
        #expect(eventually(within: .seconds(10)) { condition.waitingCount == 1 })
        try condition.withLock { condition.notify(2) }
        living.join()
        #expect(woken.withLock { $0 })
        let remembered = try condition.withLock { try condition.wait(timeout: .milliseconds(100)) }
        #expect(!remembered, "a notification for the dead waiter was kept")
    }

    @Test("wait(for:) rechecks its predicate, times out with false, holds the lock after")
    func predicate() throws {
        let condition = try ProcessCondition()
        let value = Mutex(0)
        let setter = TestThread {
            for step in 1...3 {
                usleep(30_000)
                try? condition.withLock {
                    value.withLock { $0 = step }
                    condition.notifyAll()
                }
            }
        }
        let reached = try condition.withLock {
            let result = try condition.wait(for: { value.withLock { $0 } == 3 }, timeout: .seconds(10))
            #expect(condition.isHeldByCurrentThread)
            return result
        }
        #expect(reached)
        setter.join()
        let never = try condition.withLock { try condition.wait(for: { false }, timeout: .milliseconds(80)) }
        #expect(!never)
        #expect(try condition.withLock { try condition.wait(for: { false }, timeout: .zero) } == false)
    }

    @Test("a recursive lock held twice is released fully while waiting and held twice after")
    func recursiveWait() throws {
        let lock = try RecursiveProcessLock()
        let condition = try ProcessCondition(lock: lock)
        try lock.acquire()
        try lock.acquire()
        onNewThread(after: .milliseconds(50)) {
            try? condition.withLock { condition.notify() }
        }
        #expect(try condition.wait(timeout: .seconds(10)))
        #expect(lock.recursionCount == 2)
        lock.release()
        lock.release()
    }

    @Test("an async withLock body's wait throws CancellationError when the task is cancelled")
    func asyncCancellation() async throws {
        let condition = try ProcessCondition()
        let waiter = Task { try await condition.withLock { try condition.wait(timeout: .seconds(30)) } }
        try await Task.sleep(for: .milliseconds(100))
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(condition.waitingCount == 0)
    }
}

@Suite("Sync handles", .timeLimit(.minutes(2)))
struct SyncHandleTests {
    @Test("a primitive sent on a connection is the same primitive, and the sender keeps its own")
    func sentOnConnection() throws {
        let (a, b) = try Connection<ProcessEvent>.pair()
        defer {
            a.close()
            b.close()
        }
        let event = try ProcessEvent()
        try a.send(event)
        try a.send(event)
        let first = try b.receive()
        let second = try b.receive()
        first.set()
        #expect(event.isSet && second.isSet)
        second.clear()
        #expect(!event.isSet)
        let (c, d) = try Connection<ProcessCondition>.pair()
        defer {
            c.close()
            d.close()
        }
        let condition = try ProcessCondition()
        try c.send(condition)
        let copy = try d.receive()
        onNewThread(after: .milliseconds(50)) { try? copy.withLock { copy.notify() } }
        #expect(try condition.withLock { try condition.wait(timeout: .seconds(10)) })
    }

    @Test("dropping primitives closes their shared memory descriptors")
    func noLeakedDescriptors() throws {
        func inode(_ fd: Int32) -> UInt? {
            var status = stat()
            return fstat(fd, &status) == 0 ? UInt(status.st_ino) : nil
        }
        var seen: [(Int32, UInt)] = []
        do {
            let lock = try ProcessLock()
            let recursive = try RecursiveProcessLock()
            let semaphore = try ProcessSemaphore()
            let bounded = try BoundedProcessSemaphore()
            let event = try ProcessEvent()
            let condition = try ProcessCondition()
            let barrier = try ProcessBarrier(parties: 2)
            let regions = [
                barrier.monitorForTests.region, lock.core.region, recursive.core.region, semaphore.core.monitor.region,
                bounded.core.monitor.region, event.region,
            ]
            for region in regions { seen.append((region.descriptor.rawValue, inode(region.descriptor.rawValue)!)) }
            try condition.withLock {}
        }
        for (fd, node) in seen { #expect(inode(fd) != node, "descriptor \(fd) still open") }
    }
}

/// Meets the others at the barrier `rounds` times, adding `1 << index` to `indices` each time.
struct MeetAtBarrier: ProcessTarget {
    var barrier: ProcessBarrier
    var indices: SharedCounter
    var rounds: Int
    func run() throws {
        for _ in 0..<rounds {
            let index = try barrier.wait(timeout: .seconds(30))
            indices.add(1 << index)
        }
    }
}

extension SharedCounter {
    func add(_ value: Int) {
        _ = mp_atomic_add32(region.base.assumingMemoryBound(to: UInt32.self), UInt32(value))
    }
}

@Suite("Process barriers", .timeLimit(.minutes(2)))
struct ProcessBarrierTests {
    @Test("threads and processes meet round after round, each with its own arrival index")
    func rounds() throws {
        let barrier = try ProcessBarrier(parties: 4)
        let indices = try SharedCounter()
        let meet = MeetAtBarrier(barrier: barrier, indices: indices, rounds: 3)
        let children = try startChildren(2, meet)
        let threads = (0..<2).map { _ in TestThread { #expect(throws: Never.self) { try meet.run() } } }
        for thread in threads { thread.join() }
        expectAllSucceed(children)
        #expect(indices.atomicValue == 3 * 0b1111)
        #expect(!barrier.isBroken)
        #expect(barrier.parties == 4)
    }

    @Test("a timeout breaks it for every party, zero and negative at once; reset makes it usable")
    func timeoutBreaks() throws {
        let barrier = try ProcessBarrier(parties: 2)
        for timeout: Duration in [.zero, .milliseconds(-1)] {
            #expect(throws: ProcessBarrierError.timedOut) { _ = try barrier.wait(timeout: timeout) }
            #expect(barrier.isBroken)
            barrier.reset()
        }
        let start = ContinuousClock.now
        #expect(throws: ProcessBarrierError.timedOut) { _ = try barrier.wait(timeout: .milliseconds(100)) }
        #expect(ContinuousClock.now - start >= .milliseconds(100))
        #expect(barrier.isBroken)
        #expect(throws: ProcessBarrierError.timedOut) { _ = try barrier.wait(timeout: .seconds(5)) }
        barrier.reset()
        #expect(!barrier.isBroken)
        let other = TestThread { #expect((try? barrier.wait(timeout: .seconds(10))) != nil) }
        let index = try barrier.wait(timeout: .seconds(10))
        other.join()
        #expect(index == 0 || index == 1)
        #expect(try ProcessBarrier(parties: 1).wait(timeout: .zero) == 0)
    }

    @Test("abort fails the waiting parties and later ones; reset fails the waiting ones only")
    func abortAndReset() throws {
        let barrier = try ProcessBarrier(parties: 3)
        let aborted = TestThread {
            #expect(throws: ProcessBarrierError.aborted) { _ = try barrier.wait(timeout: .seconds(30)) }
        }
        #expect(eventually(within: .seconds(10)) { barrier.waitingCount == 1 })
        barrier.abort()
        aborted.join()
        #expect(throws: ProcessBarrierError.aborted) { _ = try barrier.wait(timeout: .seconds(5)) }
        barrier.reset()
        let reset = TestThread {
            #expect(throws: ProcessBarrierError.reset) { _ = try barrier.wait(timeout: .seconds(30)) }
        }
        #expect(eventually(within: .seconds(10)) { barrier.waitingCount == 1 })
        barrier.reset()
        reset.join()
        #expect(!barrier.isBroken)
        #expect(barrier.waitingCount == 0)
    }

    @Test("a party killed while waiting releases the others with an error naming it")
    func deadParty() throws {
        let barrier = try ProcessBarrier(parties: 3)
        let child = ChildProcess(
            MeetAtBarrier(barrier: barrier, indices: try SharedCounter(), rounds: 1), isDaemon: true)
        try child.start()
        #expect(eventually(within: .seconds(30)) { barrier.waitingCount == 1 })
        child.kill()
        _ = try? child.join(timeout: .seconds(10))
        let start = ContinuousClock.now
        #expect(throws: ProcessBarrierError.partyDied(pid: child.pid!)) { _ = try barrier.wait(timeout: .seconds(20)) }
        #expect(ContinuousClock.now - start < .seconds(2))
        #expect(barrier.isBroken)
    }

    @Test("async waits meet, and a cancelled one throws CancellationError and breaks the barrier")
    func asyncForms() async throws {
        let barrier = try ProcessBarrier(parties: 2)
        async let first = barrier.wait(timeout: .seconds(10))
        async let second = barrier.wait(timeout: .seconds(10))
        #expect(Set([try await first, try await second]) == [0, 1])
        let cancelled = Task { try await barrier.wait() }
        try await Task.sleep(for: .milliseconds(100))
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        #expect(barrier.isBroken)
        #expect(throws: ProcessBarrierError.aborted) { _ = try barrier.wait(timeout: .zero) }
    }
}
