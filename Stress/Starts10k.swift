// starts-10k: ten thousand child processes started and joined one after another.

import Glibc
import Multiprocessing

/// A child that ends with the status it is given: 0 by returning from `run`, others by `exit`.
struct ExitWith: ProcessTarget {
    var status: Int32

    func run() {
        if status != 0 { exit(status) }
    }
}

/// 10,000 `ChildProcess` start + join in a row, cycling through both start methods the
/// library has (spawn and fork server; it has no plain fork, see DesignDecisions) and both
/// forms of the calls (blocking and `async`). Child i exits with status i % 5, and its
/// termination must say exactly that: `join` returns for status 0 and throws a
/// `ChildProcessError` naming the status otherwise.
let starts10k = Scenario(
    name: "starts-10k",
    summary: "10,000 process starts in a row (spawn and fork server, blocking and async), each exit status checked",
    fullDeadline: .seconds(600)
) { size in
    let count = size.pick(10_000, tiny: 100)
    var started: [StartMethod: Int] = [:]
    var time: [StartMethod: Duration] = [:]
    let clock = ContinuousClock()
    for index in 0..<count {
        let method: StartMethod = index.isMultiple(of: 2) ? .spawn : .forkserver
        let blocking = index % 4 < 2
        let status = Int32(index % 5)
        let child = ChildProcess(ExitWith(status: status), startMethod: method)
        var thrown: (any Error)?
        let began = clock.now
        do {
            if blocking {
                // The blocking calls, on a thread of their own as a script's would be: on a
                // cooperative thread they would hold half of this machine's pool.
                try await onThread { try startAndJoin(child) }
            } else {
                try await child.start()
                try await child.join()
            }
        } catch {
            thrown = error
        }
        time[method, default: .zero] += clock.now - began
        let form = "child \(index) (\(method), \(blocking ? "blocking" : "async"))"
        guard child.termination == .exited(status) else {
            throw StressFailure(
                "\(form) should have exited with status \(status): "
                    + "\(child.termination.map { "\($0)" } ?? "no termination"), \(thrown.map { "\($0)" } ?? "no error")"
            )
        }
        switch (status, thrown) {
        case (0, nil): break
        case (0, let error?): throw StressFailure("\(form) exited with status 0, yet join threw: \(error)")
        case (_, nil): throw StressFailure("\(form) exited with status \(status), yet join did not throw")
        case (_, let error?):
            guard let failure = error as? ChildProcessError, case .terminated(.exited(status)) = failure.reason else {
                throw StressFailure("\(form): join threw the wrong error for status \(status): \(error)")
            }
        }
        if child.isAlive { throw StressFailure("\(form) is still alive after join") }
        started[method, default: 0] += 1
        StressProgress.add(to: "children started and joined")
    }
    let mean = { (method: StartMethod) in
        format(seconds(time[method] ?? .zero) * 1000 / Double(max(1, started[method] ?? 0)))
    }
    return "\(started[.spawn] ?? 0) spawned (\(mean(.spawn)) ms each) + \(started[.forkserver] ?? 0) "
        + "fork-server (\(mean(.forkserver)) ms each) children, start to join, every status right"
}

/// `start()` and `join()`, the blocking forms.
private func startAndJoin(_ child: ChildProcess) throws {
    try child.start()
    try child.join()
}
