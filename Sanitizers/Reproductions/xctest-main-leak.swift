// XCTest's `XCTMain` leaks its test-suite tree when it exits; LeakSanitizer reports it and
// the exit status turns a run with no failing test into a failed one. This is the XCTest pass
// that `swift test` runs before Swift Testing, reduced to its one call.
//
// Run:  swiftc -sanitize=address xctest-main-leak.swift -o /tmp/xctest-main-leak && /tmp/xctest-main-leak
//       -> "ERROR: LeakSanitizer: detected memory leaks" (368 bytes in 6 objects, all under
//          XCTMainMisc and XCTestSuiteRun), exit status 1.
// With the suppression:
//       LSAN_OPTIONS=suppressions=Sanitizers/lsan.supp /tmp/xctest-main-leak   -> exit status 0
import XCTest

XCTMain([])
