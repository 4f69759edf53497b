import CMultiprocessing
import Glibc
import Synchronization
import SystemPackage

/// The library's one long-lived thread: an epoll loop that wakes `async` waiters when their
/// descriptor becomes readable, and the thread every child process is started from.
///
/// Why a thread of its own:
/// - `async` waits (a message, a process exit) must never block a thread of Swift's
///   cooperative pool, which has only as many threads as cores (two here).
/// - A child's parent-death signal fires when the *thread* that started it exits, not the
///   process; Dispatch's worker threads come and go, this one lives as long as the process.
final class Reactor: Sendable {
    static let shared = Reactor()
    private static let started = Atomic<Bool>(false)

    /// ``forget(_:)`` without starting the reactor thread when nothing ever waited.
    static func forgetIfRunning(_ descriptor: FileDescriptor) {
        if started.load(ordering: .acquiring) { shared.forget(descriptor) }
    }

    /// What a waiter waits for.
    enum Interest: Sendable {
        case readable, writable
        var events: UInt32 {
            switch self {
            case .readable: EPOLLIN.rawValue | EPOLLRDHUP.rawValue
            case .writable: EPOLLOUT.rawValue
            }
        }
    }

    private struct Waiter {
        let descriptor: Int32
        let interest: Interest
        let deadline: Deadline?
        let continuation: CheckedContinuation<Bool, any Error>
    }

    private struct State {
        var jobs: [@Sendable () -> Void] = []
        var waiters: [UInt64: Waiter] = [:]
        var registered: [Int32: Set<UInt64>] = [:]
        var cancelledEarly: Set<UInt64> = []
        var nextID: UInt64 = 1
    }

    private let epoll: Int32
    private let wakeup: Int32
    private let state = Mutex(State())
    private let threadID = Atomic<Int32>(0)

    private init() {
        Self.started.store(true, ordering: .releasing)
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeup = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        precondition(
            epoll >= 0 && wakeup >= 0, "the multiprocessing reactor could not start: \(Errno(rawValue: errno))")
        var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(fd: wakeup))
        epoll_ctl(epoll, EPOLL_CTL_ADD, wakeup, &event)

        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(
            &thread, nil,
            { context in
                let reactor = Unmanaged<Reactor>.fromOpaque(context!).takeRetainedValue()
                reactor.loop()
                return nil
            }, context)
        precondition(result == 0, "the multiprocessing reactor thread could not start: \(Errno(rawValue: result))")
        pthread_detach(thread)
    }

    /// Whether the caller is the reactor's own thread.
    var isCurrentThread: Bool { threadID.load(ordering: .acquiring) == mp_gettid() }

    /// Runs `body` on the reactor thread and returns its result to the blocked caller.
    func runOnLoop<Result: Sendable>(_ body: @escaping @Sendable () throws(Errno) -> Result) throws(Errno) -> Result {
        if isCurrentThread { return try body() }
        let done = ThreadSignal()
        let outcome = Mutex<Swift.Result<Result, Errno>?>(nil)
        state.withLock {
            $0.jobs.append({
                let result = Swift.Result { () throws(Errno) -> Result in try body() }
                outcome.withLock { $0 = result }
                done.fire()
            })
        }
        poke()
        done.wait()
        return try outcome.withLock { $0! }.get()
    }

    /// Suspends until `descriptor` is readable (or at end of stream, or its process has
    /// exited for a pidfd). Returns `false` when the deadline passes first; throws
    /// `CancellationError` when the task is cancelled. Never blocks a cooperative thread.
    func waitReadable(_ descriptor: FileDescriptor, deadline: Deadline?) async throws -> Bool {
        try await wait(for: .readable, on: descriptor, deadline: deadline)
    }

    /// Suspends until `descriptor` can be written without blocking (or has failed), like
    /// ``waitReadable(_:deadline:)``.
    ///
    /// With `cancellable: false` the wait goes on when the task is cancelled (for work that
    /// must finish once started, such as the rest of a message).
    func wait(
        for interest: Interest, on descriptor: FileDescriptor, deadline: Deadline?, cancellable: Bool = true
    ) async throws -> Bool {
        let id = state.withLock { state -> UInt64 in
            defer { state.nextID += 1 }
            return state.nextID
        }
        guard cancellable else {
            return try await withCheckedThrowingContinuation { continuation in
                register(id, continuation, on: descriptor, for: interest, deadline: deadline)
            }
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                register(id, continuation, on: descriptor, for: interest, deadline: deadline)
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let waiter = state.waiters.removeValue(forKey: id) else {
                    state.cancelledEarly.insert(id)
                    return nil
                }
                unregister(id, of: waiter.descriptor, in: &state)
                return waiter
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Adds a waiter and arms its descriptor; resumes it at once with `CancellationError`
    /// if its task was cancelled before it got here.
    private func register(
        _ id: UInt64, _ continuation: CheckedContinuation<Bool, any Error>, on descriptor: FileDescriptor,
        for interest: Interest, deadline: Deadline?
    ) {
        let registered = state.withLock { state -> Bool in
            if state.cancelledEarly.remove(id) != nil { return false }
            let isNew = state.registered[descriptor.rawValue] == nil
            state.waiters[id] = Waiter(
                descriptor: descriptor.rawValue, interest: interest, deadline: deadline, continuation: continuation)
            state.registered[descriptor.rawValue, default: []].insert(id)
            arm(descriptor.rawValue, isNew: isNew, in: state)
            return true
        }
        if registered {
            if deadline != nil { poke() }  // the loop must recompute its timeout
        } else {
            continuation.resume(throwing: CancellationError())
        }
    }

    /// Wakes every waiter on `descriptor` (they retry, and find it closed) and removes it
    /// from the epoll set. Call before closing a descriptor that `async` code may wait on.
    func forget(_ descriptor: FileDescriptor) {
        let woken = state.withLock { state -> [Waiter] in
            guard let ids = state.registered.removeValue(forKey: descriptor.rawValue) else { return [] }
            epoll_ctl(epoll, EPOLL_CTL_DEL, descriptor.rawValue, nil)
            return ids.compactMap { state.waiters.removeValue(forKey: $0) }
        }
        for waiter in woken { waiter.continuation.resume(returning: true) }
    }

    private func unregister(_ id: UInt64, of descriptor: Int32, in state: inout State) {
        state.registered[descriptor]?.remove(id)
        if state.registered[descriptor]?.isEmpty == true {
            state.registered[descriptor] = nil
            epoll_ctl(epoll, EPOLL_CTL_DEL, descriptor, nil)
        } else {
            arm(descriptor, isNew: false, in: state)
        }
    }

    /// (Re)arms `descriptor` one-shot for what its remaining waiters want.
    private func arm(_ descriptor: Int32, isNew: Bool, in state: State) {
        let ids = state.registered[descriptor] ?? []
        let events = ids.reduce(UInt32(EPOLLONESHOT.rawValue)) { $0 | (state.waiters[$1]?.interest.events ?? 0) }
        var event = epoll_event(events: events, data: epoll_data_t(fd: descriptor))
        epoll_ctl(epoll, isNew ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, descriptor, &event)
    }

    private func poke() {
        var one: UInt64 = 1
        _ = write(wakeup, &one, 8)
    }

    private func loop() {
        threadID.store(mp_gettid(), ordering: .releasing)
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        while true {
            let timeout = state.withLock { state -> Int32 in
                let earliest = state.waiters.values.compactMap(\.deadline).min()
                return state.jobs.isEmpty ? earliest.pollTimeout : 0
            }
            let count = epoll_wait(epoll, &events, Int32(events.count), timeout)
            var ready: [Waiter] = []
            var expired: [Waiter] = []
            let jobs = state.withLock { state -> [@Sendable () -> Void] in
                for index in 0..<max(0, Int(count)) {
                    let descriptor = events[index].data.fd
                    let fired = events[index].events
                    if descriptor == wakeup {
                        var value: UInt64 = 0
                        _ = read(wakeup, &value, 8)
                        continue
                    }
                    guard let ids = state.registered[descriptor] else { continue }
                    // An error or hang-up wakes everyone: their next call reports it.
                    let failed = fired & (EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0
                    for id in ids {
                        guard let waiter = state.waiters[id], failed || fired & waiter.interest.events != 0 else {
                            continue
                        }
                        state.waiters[id] = nil
                        state.registered[descriptor]?.remove(id)
                        ready.append(waiter)
                    }
                    if state.registered[descriptor]?.isEmpty == true {
                        state.registered[descriptor] = nil
                        epoll_ctl(epoll, EPOLL_CTL_DEL, descriptor, nil)
                    } else {
                        arm(descriptor, isNew: false, in: state)
                    }
                }
                let now = ContinuousClock.now
                for (id, waiter) in state.waiters where waiter.deadline.map({ $0 <= now }) ?? false {
                    state.waiters[id] = nil
                    unregister(id, of: waiter.descriptor, in: &state)
                    expired.append(waiter)
                }
                defer { state.jobs.removeAll() }
                return state.jobs
            }
            for waiter in ready { waiter.continuation.resume(returning: true) }
            for waiter in expired { waiter.continuation.resume(returning: false) }
            for job in jobs { job() }
        }
    }
}
