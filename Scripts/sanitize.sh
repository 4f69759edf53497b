#!/usr/bin/env bash
# Builds the package and its tests with a sanitizer and runs the whole suite under it:
#
#     bash Scripts/sanitize.sh address|thread [more `swift test` arguments, e.g. --filter Queue]
#
# Each sanitizer has its own build directory (.build-asan, .build-tsan), so the plain build
# in .build is left alone and a second run rebuilds only what changed.
#
# The library's children re-run the test binary, so they are sanitized too, and they inherit
# the options below through the environment. Every process writes its reports to a file of
# its own (`log_path`, suffixed with its pid): a child whose report ends it is often one a
# test expects to fail anyway, and its stderr may not reach the log, so the run fails when
# ANY process wrote a report, even if every test passed. See RELIABILITY.md, "Sanitizers".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

sanitizer=${1:-}
case "$sanitizer" in
  address) scratch=.build-asan ;;
  thread) scratch=.build-tsan ;;
  *)
    echo "usage: bash Scripts/sanitize.sh address|thread [swift test arguments]" >&2
    exit 2
    ;;
esac
shift

reports=$(mktemp -d "/tmp/mp-sanitize-$sanitizer.XXXXXX")

case "$sanitizer" in
  address)
    # halt_on_error=1: the first report ends the process (ASan cannot go on after one
    # without -fsanitize-recover anyway; said here so no inherited setting changes it).
    # detect_leaks=1: LeakSanitizer runs at exit in the test runner. Workers leave with
    # _exit (like Python's), which skips the leak check by design: their memory is the
    # process's, returned whole.
    export ASAN_OPTIONS="suppressions=$root/Sanitizers/asan.supp:log_path=$reports/asan:halt_on_error=1:detect_leaks=1"
    export LSAN_OPTIONS="suppressions=$root/Sanitizers/lsan.supp"
    ;;
  thread)
    # halt_on_error=0: a report does not end the process, so one run lists every race;
    # the run fails afterwards if any process wrote one.
    export TSAN_OPTIONS="suppressions=$root/Sanitizers/tsan.supp:log_path=$reports/tsan:halt_on_error=0"
    # The Swift runtime's crash handler cannot run under ThreadSanitizer: it clones the
    # crashed process to start swift-backtrace, and TSan's fork handling in that clone
    # fails an internal CHECK, so a child that crashes on purpose exits with status 66
    # instead of dying by its signal. Not a sanitizer check: the handler only prints the
    # backtrace. Sanitizers/Reproductions/swift-backtracer.swift shows it.
    export SWIFT_BACKTRACE=enable=no
    ;;
esac

# The fault matrix (Tests/FaultMatrixTests) at fewer points per object and fault than its 50:
# every point is a runner process and its children, each several times slower sanitized.
# ASan: 5, as Scripts/test-repeatedly.sh runs it. TSan: 2 (every cell still runs): at 5, each
# of the 7 rows took 150-210 s under TSan (12:00 UTC run), 25 minutes for the matrix alone.
# Set MP_FAULT_POINTS to run more.
case "$sanitizer" in
  address) export MP_FAULT_POINTS="${MP_FAULT_POINTS:-5}" ;;
  thread) export MP_FAULT_POINTS="${MP_FAULT_POINTS:-2}" ;;
esac

started=$(date +%s)
echo "== build with --sanitize=$sanitizer in $scratch =="
log="$reports/build.log"
swift build --build-tests --sanitize="$sanitizer" --scratch-path "$scratch" 2>&1 | tee "$log" | grep -E "error|Compiling|Build complete" || true
if [ "${PIPESTATUS[0]}" != 0 ] || ! grep -q "Build complete" "$log"; then
  echo "the build failed (log: $log)" >&2
  exit 1
fi
if grep -E "^$root/(Sources|Tests|Examples|Benchmarks)/.*warning:" "$log"; then
  echo "warnings in the package's code" >&2
  exit 1
fi
built=$(date +%s)

# --no-parallel: one test at a time. Swift Testing runs a synchronous test on a thread of
# the cooperative pool (two threads on two cores), and many tests here block on a child
# (join, a blocking receive). Sanitized, every process runs several times slower, so in a
# parallel run those tests held both threads for minutes: tests that had started but could
# not get a thread ran past their time limits, and the cancellation left some of them waiting
# forever (an async send cancelled in the middle of a message finishes it, and its reader had
# been cancelled). Measured: a parallel ASan run had 10 tests past their limit and never
# ended; the same tests pass alone.
echo "== swift test --sanitize=$sanitizer --no-parallel (reports go to $reports) =="
status=0
timeout 2700 swift test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch" --no-parallel "$@" \
  >"$reports/test.log" 2>&1 || status=$?
ended=$(date +%s)
grep -E "✘|Test run with" "$reports/test.log" | tail -40 || true

# A report is an ERROR (ASan, LSan, a TSan deadly signal), a WARNING (a TSan race) or a
# CHECK failure of the runtime; ASan's "ignoring requested __asan_handle_no_return" note is
# a warning about stack switching, not a finding, and is left out.
reported="ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)|WARNING: ThreadSanitizer|CHECK failed"
# Expected, and only this: the fault matrix's injected segmentation fault (a store through
# address 8 in FaultInjection.perform, Sources/Multiprocessing/System/FaultInjection.swift),
# which the sanitizer's own SIGSEGV handler reports before the process dies (with status 1
# instead of the signal; the matrix checks the other processes, not how this one ended).
# A sanitizer's SEGV report cannot be suppressed by its suppressions file, so it is
# recognised here: a process whose every report is that one is not counted.
injected="^SUMMARY: (AddressSanitizer|ThreadSanitizer): SEGV .*FaultInjection.swift:[0-9:]* in [$]s15Multiprocessing14FaultInjectionO7perform"
found=""
injected_count=0
for file in "$reports"/asan.* "$reports"/tsan.*; do
  [ -e "$file" ] || continue
  grep -qE "$reported" "$file" || continue
  summaries=$(grep -c "^SUMMARY:" "$file" || true)
  expected=$(grep -cE "$injected" "$file" || true)
  if [ "$summaries" -gt 0 ] && [ "$summaries" = "$expected" ]; then
    injected_count=$((injected_count + 1))
    continue
  fi
  found="$found $file"
done
for file in $found; do
  echo "---- $file" >&2
  cat "$file" >&2
done
[ "$injected_count" = 0 ] || echo "$injected_count fault-matrix segmentation fault(s) reported as injected (expected)"

echo "build $((built - started)) s, tests $((ended - built)) s"
if [ "$status" != 0 ]; then
  echo "swift test failed under --sanitize=$sanitizer (status $status, log: $reports/test.log)" >&2
  exit 1
fi
if [ -n "$found" ]; then
  echo "$(echo $found | wc -w) process(es) wrote a $sanitizer sanitizer report (above)" >&2
  exit 1
fi
echo "every test run passed under --sanitize=$sanitizer, with no report from any process"
rm -rf "$reports"
