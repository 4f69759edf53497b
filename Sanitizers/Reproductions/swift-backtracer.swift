// A Swift program that crashes (fatalError) on a thread of its own, as a worker's work does.
// Swift's crash handler (libswiftCore, CrashHandlerLinux.cpp) then starts swift-backtrace and
// serves it the crashed process's memory. Under either sanitizer that handler goes wrong:
//
// AddressSanitizer: the handler's "memory server" thread copies memory with memcpy in 4 KiB
// blocks, including the crashed thread's stack, whose redzones make ASan's memcpy interceptor
// report a stack-buffer-overflow/underflow from inside the runtime. The process exits with
// status 1 instead of dying by SIGILL, and the orphaned swift-backtrace lingers holding the
// parent's stdout/stderr (a `swift test` waiting on that pipe never returns).
//   swiftc -sanitize=address swift-backtracer.swift -o /tmp/swift-backtracer-asan
//   /tmp/swift-backtracer-asan; echo $?
//     -> "ERROR: AddressSanitizer: stack-buffer-underflow ... in memserver_read", status 1,
//        and a swift-backtrace process left running (end it by its pid).
//   ASAN_OPTIONS=suppressions=Sanitizers/asan.supp /tmp/swift-backtracer-asan; echo $?
//     -> the usual crash report, status 132 (SIGILL), nothing left running.
//
// ThreadSanitizer: the handler clones the crashed process to start swift-backtrace, and
// TSan's fork handling in that clone fails an internal CHECK: the process exits with status
// 66 instead of dying by SIGILL. A CHECK failure cannot be suppressed; Scripts/sanitize.sh
// turns the Swift backtracer off for the TSan run (SWIFT_BACKTRACE=enable=no: the crash is
// then reported by the runtime's plain message and the signal is the same).
//   swiftc -sanitize=thread swift-backtracer.swift -o /tmp/swift-backtracer-tsan
//   /tmp/swift-backtracer-tsan; echo $?
//     -> "ThreadSanitizer: CHECK failed: tsan_rtl.cpp:261 ..." (in ForkAfter), status 66
//   SWIFT_BACKTRACE=enable=no /tmp/swift-backtracer-tsan; echo $?   -> status 132 (SIGILL)
import Glibc

@inline(never) func crash(_ values: [Int]) {
    var local = (1, 2, 3, 4)  // a frame with redzones around its locals
    withUnsafeMutablePointer(to: &local) { pointer in
        if values.count > 0 { fatalError("deliberate crash \(pointer.pointee.0)") }
    }
}

// On a thread of its own, as a worker's work runs: the memory server reads that stack.
var thread = pthread_t()
pthread_create(
    &thread, nil,
    { _ in
        crash([1]); return nil
    }, nil)
pthread_join(thread, nil)
