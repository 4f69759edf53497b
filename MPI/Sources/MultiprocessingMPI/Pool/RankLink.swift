import Synchronization

/// Rank 0's side of one worker rank's ``PoolService``: the channel, the requests waiting for
/// their replies, and whether the rank is still there.
///
/// One task per rank receives the replies and resumes their waiters; when the rank is lost
/// (or its service ends), every waiter, present and future, gets that error: a request
/// never waits for a rank that will not answer.
final class RankLink: Sendable {
    let rank: Int
    let channel: RankChannel
    private let state = Mutex(State())

    private struct State {
        var waiting: [UInt64: CheckedContinuation<PoolReply, any Error>] = [:]
        var failure: (any Error)?
    }

    init(rank: Int, channel: RankChannel) {
        self.rank = rank
        self.channel = channel
    }

    /// Whether the rank was lost or its service ended.
    var isGone: Bool { state.withLock { $0.failure != nil } }

    /// Receives replies until the channel fails; run on a task of its own.
    func receiveReplies() async {
        while true {
            let reply: PoolReply
            do {
                reply = try await channel.receive(PoolReply.self)
            } catch {
                fail(with: error)
                return
            }
            let id: UInt64
            switch reply {
            case .ready: continue
            case .logs(let batch):
                RankLogs.logAgain(batch, from: rank)
                continue
            case .done(let replied, _), .refused(let replied, _): id = replied
            }
            state.withLock { $0.waiting.removeValue(forKey: id) }?.resume(returning: reply)
        }
    }

    /// Sends `request` (a `.run` with this `id`) and waits for its reply. Cancelling the
    /// waiting task tells the rank to end the request's items and throws `CancellationError`.
    func call(_ request: PoolRequest, id: UInt64) async throws -> PoolReply {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<PoolReply, any Error>) in
                let failure = state.withLock { state -> (any Error)? in
                    if let failure = state.failure { return failure }
                    state.waiting[id] = continuation
                    return nil
                }
                if let failure {
                    continuation.resume(throwing: failure)
                    return
                }
                let channel = channel
                Task {
                    do {
                        try await channel.send(request)
                    } catch {
                        self.state.withLock { $0.waiting.removeValue(forKey: id) }?.resume(throwing: error)
                    }
                }
            }
        } onCancel: {
            state.withLock { $0.waiting.removeValue(forKey: id) }?.resume(throwing: CancellationError())
            let channel = channel
            Task { try? await channel.send(PoolRequest.cancel(id: id)) }
        }
    }

    /// Fails every waiter with `error`, and every later call.
    func fail(with error: any Error) {
        let waiters = state.withLock { state -> [CheckedContinuation<PoolReply, any Error>] in
            if state.failure == nil { state.failure = error }
            defer { state.waiting.removeAll() }
            return Array(state.waiting.values)
        }
        for waiter in waiters { waiter.resume(throwing: error) }
    }
}
