#!/usr/bin/env bash
# Builds the DocC catalog with the toolchain's own docc and fails on any warning (a broken
# or ambiguous symbol link, a missing article). No plugin needed.
#
#     bash Scripts/check-docs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
all=$(mktemp -d)
graphs=$(mktemp -d)
out=$(mktemp -d)
trap 'rm -rf "$all" "$graphs" "$out"' EXIT
swift build --target Multiprocessing -Xswiftc -emit-symbol-graph -Xswiftc -emit-symbol-graph-dir \
  -Xswiftc "$all" >/dev/null
# This module's graphs only (its extensions of other modules' types included); the
# dependencies' own graphs would only bring their warnings.
cp "$all"/Multiprocessing.symbols.json "$all"/Multiprocessing@*.symbols.json "$graphs"/ 2>/dev/null || true
docc convert Sources/Multiprocessing/Documentation.docc --additional-symbol-graph-dir "$graphs" \
  --fallback-display-name Multiprocessing --fallback-bundle-identifier swift-multiprocessing \
  --output-path "$out" --analyze 2>&1 | tee "$out.log" | grep -E "^(warning|error):" || true
if grep -qE "^(warning|error):" "$out.log"; then
  echo "DocC reported problems (above)" >&2
  rm -f "$out.log"
  exit 1
fi
rm -f "$out.log"
echo "DocC: no warnings"
