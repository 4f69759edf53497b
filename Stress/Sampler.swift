// The parent's memory and descriptors read at intervals while a scenario runs, on a thread of
// its own so that it keeps reading when the scenario keeps the cooperative threads busy.

import Glibc
import Synchronization

/// Reads the parent's resources every `interval` until stopped, keeping the highest readings.
final class Sampler: Sendable {
    private struct State {
        var peakResident = 0
        var peakDescriptors = 0
        var samples = 0
        var stopped = false
    }

    private let state = Mutex(State())
    private let finished = Mutex(false)
    private let interval: Duration

    /// Starts reading at once, then every `interval`.
    init(interval: Duration) {
        self.interval = interval
        startThread { [self] in loop() }
    }

    private func loop() {
        while true {
            let reading = ParentResources.read()
            let stop = state.withLock { state in
                state.peakResident = max(state.peakResident, reading.residentBytes)
                state.peakDescriptors = max(state.peakDescriptors, reading.descriptors)
                state.samples += 1
                return state.stopped
            }
            if stop { break }
            let (seconds, attoseconds) = interval.components
            var time = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
            var remaining = timespec()
            while nanosleep(&time, &remaining) != 0 && errno == EINTR { time = remaining }
        }
        finished.withLock { $0 = true }
    }

    /// Stops the thread (after one last reading) and returns the peaks and how many readings
    /// were taken.
    func stop() -> (resident: Int, descriptors: Int, samples: Int) {
        state.withLock { $0.stopped = true }
        // The thread ends within one interval; wait for it so that no reading of ours is
        // under way when the caller reads the end state.
        while !finished.withLock({ $0 }) { usleep(1000) }
        return state.withLock { ($0.peakResident, $0.peakDescriptors, $0.samples) }
    }
}
