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
