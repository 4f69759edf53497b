#!/usr/bin/env bash
# Runs the test suite (Swift Testing runs tests in parallel) N times in a row and stops at
# the first failure. Concurrency bugs show up only under load: with --busy, two CPU hogs
# run meanwhile, so the suite competes for this machine's 2 cores as CI's would.
#
# The fault matrix (FaultMatrixTests) runs in every repetition at 5 points per object and
# fault (MP_FAULT_POINTS overrides), each repetition with a seed of its own: run r uses
# MP_FAULT_SEED=r, printed on failure, so the repetitions add new points rather than repeat
# the 50 of the main run.
#
#     bash Scripts/test-repeatedly.sh [N] [--busy]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=10
busy=false
for argument in "$@"; do
  case "$argument" in
    --busy) busy=true ;;
    *) runs=$argument ;;
  esac
done

swift build --build-tests >/dev/null
hogs=()
if $busy; then
  for _ in 1 2; do (while :; do :; done) & hogs+=($!); done
fi
stop_hogs() { for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_hogs EXIT

for run in $(seq 1 "$runs"); do
  log=$(mktemp)
  if ! MP_FAULT_POINTS="${MP_FAULT_POINTS:-5}" MP_FAULT_SEED="$run" timeout 900 swift test --skip-build >"$log" 2>&1; then
    grep -E "✘|error|Fatal" "$log" | head -40 >&2
    echo "run $run of $runs FAILED (log: $log; fault-matrix seed MP_FAULT_SEED=$run)" >&2
    exit 1
  fi
  summary=$(grep -E "Test run with" "$log" | tail -1)
  rm -f "$log"
  echo "run $run of $runs passed: ${summary#*✔ }"
done
echo "$runs runs in a row passed$($busy && echo ' (2 CPU hogs running)')"
