// Swift's crash handler (the backtracer's memory server thread, CrashHandlerLinux.cpp) copies
// the crashed process's memory for swift-backtrace with memcpy, in 4 KiB blocks, including
// the crashed thread's stack. Under AddressSanitizer that stack holds redzones, so ASan's
// memcpy interceptor reports an overflow from inside the runtime, the process exits with
// status 1 instead of dying by SIGILL, and the orphaned swift-backtrace lingers holding the
// parent's stdout/stderr (a `swift test` waiting on that pipe never returns).
//
// Run:  swiftc -sanitize=address backtracer-memserver.swift -o /tmp/backtracer-memserver
//       /tmp/backtracer-memserver; echo $?
//       -> "ERROR: AddressSanitizer: stack-buffer-underflow ... in memserver_read", status 1,
//          and a swift-backtrace process left running (kill it by its pid).
// With the suppression:
//       ASAN_OPTIONS=suppressions=Sanitizers/asan.supp /tmp/backtracer-memserver; echo $?
//       -> the usual crash report, status 132 (SIGILL), nothing left running.
import Glibc

@inline(never) func crash(_ values: [Int]) {
    var local = (1, 2, 3, 4)  // a frame with redzones around its locals
    withUnsafeMutablePointer(to: &local) { pointer in
        if values.count > 0 { fatalError("deliberate crash \(pointer.pointee.0)") }
    }
}

// On a thread of its own, as a worker's work runs: the memory server reads that stack.
var thread = pthread_t()
pthread_create(&thread, nil, { _ in crash([1]); return nil }, nil)
pthread_join(thread, nil)
