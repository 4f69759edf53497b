#!/usr/bin/env bash
# Builds the MPI package's tests and runs them under mpirun on 4 ranks: rank 0 runs the
# tests, ranks 1-3 are caught by the package's bootstrap before `main` and serve rank 0.
#
#   MPI/Scripts/test.sh [extra arguments for the test binary, e.g. --filter rankKilled]
#
# Environment: RANKS (default 4), TIMEOUT in seconds for the whole run (default 300).
#
# Why the flags: --allow-run-as-root (CI and this VM run as root), --oversubscribe (more
# ranks than cores), --enable-recovery (without it, a rank that dies, as one test makes it,
# aborts the whole job, rank 0 included). With --enable-recovery mpirun exits 0 whatever
# rank 0 returned, so rank 0's status is written to a file and checked here.
set -euo pipefail
cd "$(dirname "$0")/.."

swift build --build-tests
binary="$(swift build --show-bin-path)/swift-multiprocessing-mpiPackageTests.xctest"
status_file="$(mktemp)"
trap 'rm -f "$status_file"' EXIT
echo unknown >"$status_file"

set +e
timeout --kill-after=10 "${TIMEOUT:-300}" mpirun --allow-run-as-root --oversubscribe --enable-recovery \
    -np "${RANKS:-4}" -x MPI_TEST_STATUS_FILE="$status_file" \
    bash -c '"$0" "$@"; status=$?; if [ "${OMPI_COMM_WORLD_RANK:-0}" = 0 ]; then echo "$status" >"$MPI_TEST_STATUS_FILE"; fi; exit "$status"' \
    "$binary" --testing-library swift-testing "$@"
launcher=$?
set -e

status="$(cat "$status_file")"
# mpirun's own status is not rank 0's: with --enable-recovery it is 0, or 137 when a test
# killed a rank with SIGKILL. Rank 0's status decides; mpirun's only says if it timed out.
if [ "$status" = 0 ]; then
    echo "MPI tests: passed on ${RANKS:-4} ranks"
    exit 0
fi
if [ "$status" = unknown ] && { [ "$launcher" = 124 ] || [ "$launcher" = 137 ]; }; then
    echo "MPI tests: mpirun timed out after ${TIMEOUT:-300} s" >&2
else
    echo "MPI tests: rank 0 exited with status $status (mpirun: $launcher)" >&2
fi
exit 1
