import CMultiprocessing
import Glibc
import Synchronization
import SystemPackage

/// The library's event loop: one long-lived thread in `epoll_wait` that wakes `async`
/// waiters when one of their descriptors is ready or their deadline passes.
///
/// `async` waits (a message, a process exit, room to send) must never block a thread of
/// Swift's cooperative pool, which has only as many threads as cores (two here): they
/// suspend here instead. A waiter may wait for several descriptors at once (a child's
/// report or its exit, whichever comes first), which is what waiting on many things is
/// built from.
final class Reactor: Sendable {
    static let shared = Reactor()
    private static let started = Atomic<Bool>(false)

    /// ``forget(_:)`` without starting the reactor thread when nothing ever waited.
    static func forgetIfRunning(_ descriptor: FileDescriptor) {
        if started.load(ordering: .acquiring) { shared.forget(descriptor) }
    }

    /// What a waiter waits for on one descriptor.
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
        let targets: [(descriptor: Int32, interest: Interest)]
        let deadline: Deadline?
        let continuation: CheckedContinuation<Bool, any Error>
    }

    private struct State {
        var waiters: [UInt64: Waiter] = [:]
        var registered: [Int32: Set<UInt64>] = [:]
        var cancelledEarly: Set<UInt64> = []
        var nextID: UInt64 = 1
    }

    private let epoll: Int32
    private let wakeup: Int32
    private let state = Mutex(State())

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

    /// Suspends until `descriptor` is readable (or at end of stream, or its process has
    /// exited for a pidfd). Returns `false` when the deadline passes first; throws
    /// `CancellationError` when the task is cancelled. Never blocks a cooperative thread.
    func waitReadable(_ descriptor: FileDescriptor, deadline: Deadline?) async throws -> Bool {
        try await wait(for: [(descriptor, .readable)], deadline: deadline)
    }

    /// Suspends until `descriptor` is ready for `interest`, like ``waitReadable(_:deadline:)``.
    func wait(
        for interest: Interest, on descriptor: FileDescriptor, deadline: Deadline?, cancellable: Bool = true,
        unless stop: (@Sendable () -> Bool)? = nil
    ) async throws -> Bool {
        try await wait(for: [(descriptor, interest)], deadline: deadline, cancellable: cancellable, unless: stop)
    }

    /// Suspends until any of `targets` is ready (or has failed: an error or hang-up wakes
    /// the waiter too). Returns `false` when the deadline passes first.
    ///
    /// - Parameters:
    ///   - cancellable: with `false` the wait goes on when the task is cancelled (for work
    ///     that must finish once started, such as the rest of a message).
    ///   - stop: checked once the waiter is registered, under the reactor's lock: if it is
    ///     true the wait ends at once. A stream that is closed sets its flag before calling
    ///     ``forget(_:)``, so a waiter that registers just after the close still wakes.
    func wait(
        for targets: [(FileDescriptor, Interest)], deadline: Deadline?, cancellable: Bool = true,
        unless stop: (@Sendable () -> Bool)? = nil
    ) async throws -> Bool {
        let id = state.withLock { state -> UInt64 in
            defer { state.nextID += 1 }
            return state.nextID
        }
        let targets = targets.map { (descriptor: $0.0.rawValue, interest: $0.1) }
        guard cancellable else {
            return try await withCheckedThrowingContinuation { continuation in
                register(id, Waiter(targets: targets, deadline: deadline, continuation: continuation), unless: stop)
            }
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                register(id, Waiter(targets: targets, deadline: deadline, continuation: continuation), unless: stop)
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let waiter = state.waiters[id] else {
                    state.cancelledEarly.insert(id)
                    return nil
                }
                remove(id, in: &state)
                return waiter
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Adds a waiter and arms its descriptors; resumes it at once if its task was cancelled
    /// before it got here, or if `stop` says there is nothing left to wait for.
    private func register(_ id: UInt64, _ waiter: Waiter, unless stop: (@Sendable () -> Bool)?) {
        enum Outcome { case waiting, cancelled, stopped }
        let outcome = state.withLock { state -> Outcome in
            if state.cancelledEarly.remove(id) != nil { return .cancelled }
            if stop?() == true { return .stopped }
            state.waiters[id] = waiter
            for target in waiter.targets {
                let isNew = state.registered[target.descriptor] == nil
                state.registered[target.descriptor, default: []].insert(id)
                arm(target.descriptor, isNew: isNew, in: state)
            }
            return .waiting
        }
        switch outcome {
        case .waiting: if waiter.deadline != nil { poke() }  // the loop must recompute its timeout
        case .cancelled: waiter.continuation.resume(throwing: CancellationError())
        case .stopped: waiter.continuation.resume(returning: true)
        }
    }

    /// Wakes every waiter on `descriptor` (they retry, and find it closed) and removes it
    /// from the epoll set. Call before closing a descriptor that `async` code may wait on.
    func forget(_ descriptor: FileDescriptor) {
        let woken = state.withLock { state -> [Waiter] in
            guard let ids = state.registered[descriptor.rawValue] else { return [] }
            return ids.compactMap { id in
                defer { remove(id, in: &state) }
                return state.waiters[id]
            }
        }
        for waiter in woken { waiter.continuation.resume(returning: true) }
    }

    /// Takes a waiter out of the table and out of every descriptor's list, disarming or
    /// re-arming each for the waiters that remain.
    private func remove(_ id: UInt64, in state: inout State) {
        guard let waiter = state.waiters.removeValue(forKey: id) else { return }
        for target in waiter.targets {
            state.registered[target.descriptor]?.remove(id)
            if state.registered[target.descriptor]?.isEmpty == true {
                state.registered[target.descriptor] = nil
                epoll_ctl(epoll, EPOLL_CTL_DEL, target.descriptor, nil)
            } else if state.registered[target.descriptor] != nil {
                arm(target.descriptor, isNew: false, in: state)
            }
        }
    }

    /// (Re)arms `descriptor` one-shot for what its remaining waiters want.
    private func arm(_ descriptor: Int32, isNew: Bool, in state: State) {
        let ids = state.registered[descriptor] ?? []
        var events = UInt32(EPOLLONESHOT.rawValue)
        for id in ids {
            for target in state.waiters[id]?.targets ?? [] where target.descriptor == descriptor {
                events |= target.interest.events
            }
        }
        var event = epoll_event(events: events, data: epoll_data_t(fd: descriptor))
        epoll_ctl(epoll, isNew ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, descriptor, &event)
    }

    private func poke() {
        var one: UInt64 = 1
        _ = write(wakeup, &one, 8)
    }

    private func loop() {
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        while true {
            let timeout = state.withLock { state -> Int32 in
                state.waiters.values.compactMap(\.deadline).min().pollTimeout
            }
            let count = epoll_wait(epoll, &events, Int32(events.count), timeout)
            var ready: [Waiter] = []
            var expired: [Waiter] = []
            state.withLock { state in
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
                    var woken: [UInt64] = []
                    for id in ids {
                        guard let waiter = state.waiters[id] else { continue }
                        let wanted = waiter.targets.contains {
                            $0.descriptor == descriptor && fired & $0.interest.events != 0
                        }
                        if failed || wanted { woken.append(id) }
                    }
                    for id in woken {
                        if let waiter = state.waiters[id] { ready.append(waiter) }
                        remove(id, in: &state)
                    }
                    // One-shot: a descriptor whose waiters were not all woken must be re-armed.
                    if state.registered[descriptor] != nil { arm(descriptor, isNew: false, in: state) }
                }
                let now = ContinuousClock.now
                for (id, waiter) in state.waiters where waiter.deadline.map({ $0 <= now }) ?? false {
                    expired.append(waiter)
                    remove(id, in: &state)
                }
            }
            for waiter in ready { waiter.continuation.resume(returning: true) }
            for waiter in expired { waiter.continuation.resume(returning: false) }
        }
    }
}
