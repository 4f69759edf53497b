import Synchronization

/// This process's last look at the far end of a ring: the head as its producers last read
/// it, the tail as its consumers last read it, each with the ring's lap count at that moment.
///
/// Each put reading the head (and each get the tail) would fetch a cache line that the other
/// side has just written: one transfer between CPUs per item, and another when the other side
/// writes it again. A side reads the far end afresh only when its copy says "full" (or
/// "empty"). A copy can only be behind: ends only move forward, so a stale head shows less
/// room than there is, and a stale tail fewer items; a consumer whose copy of the tail is
/// behind the head (other consumers took those items) sees that and reads afresh.
///
/// Positions are counted modulo 2³², so a copy that is 4 GiB behind would look current. The
/// lap count (``QueueRing``, bumped each time the tail crosses a multiple of 2³⁰ bytes)
/// rules that out: a copy is used only while the lap count is the one it was taken with, so
/// the tail has moved less than 2³¹ bytes since, and every difference stays exact.
///
/// Each half is read and written only under its side's lock (the producers' for the head,
/// the consumers' for the tail), which orders the threads of this process: relaxed atomics
/// suffice (they are atomics only to make the class `Sendable`).
final class QueuePositionCache: Sendable {
    /// A lap value no ring has (laps are 32-bit): the copy is not usable.
    static let noCopy = UInt64.max

    /// The head's word, as read by a producer of this process.
    let head = Atomic<UInt64>(0)
    /// The lap count when ``head`` was read; ``noCopy`` before the first read.
    let headLap = Atomic<UInt64>(QueuePositionCache.noCopy)
    /// The tail's word, as read by a consumer of this process.
    let tail = Atomic<UInt64>(0)
    /// The lap count when ``tail`` was read; ``noCopy`` before the first read.
    let tailLap = Atomic<UInt64>(QueuePositionCache.noCopy)
}
