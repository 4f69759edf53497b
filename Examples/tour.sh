#!/usr/bin/env bash
# Runs every example, one after the other: a tour of the library.
# Usage: bash Examples/tour.sh
set -euo pipefail
cd "$(dirname "$0")/.."
examples=(workers error-handling pipes shared-memory queues pool progress)
for example in "${examples[@]}"; do
  swift build -c release --product "$example" 2>&1 | grep -E "error|warning" || true
done
bin=$(swift build -c release --show-bin-path)
for example in "${examples[@]}"; do
  echo "=== $example ==="
  "$bin/$example"
  echo
done

# The MPI package's example (MPI/README.md), only where Open MPI is installed: the seed's
# Pool example on 4 ranks.
if command -v mpirun >/dev/null && pkg-config --exists ompi-c 2>/dev/null; then
  echo "=== pool-on-ranks (MPI, 4 ranks) ==="
  (cd MPI && swift build --product pool-on-ranks 2>&1 | grep -E "error|warning" || true)
  timeout 120 mpirun --allow-run-as-root --oversubscribe --enable-recovery -np 4 \
    "$(cd MPI && swift build --show-bin-path)/pool-on-ranks" 2> >(grep -v "PMIX ERROR" >&2)
else
  echo "=== pool-on-ranks: skipped (no mpirun; see MPI/README.md) ==="
fi
