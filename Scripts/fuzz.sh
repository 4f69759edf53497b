#!/usr/bin/env bash
# Fuzzes the wire decoders with libFuzzer: builds the fuzz package (Fuzz/, release, with
# -sanitize=fuzzer,address) and runs each target for a fixed number of executions from a
# COPY of its committed seed corpus (Fuzz/Corpus/<target>/), so a run never writes into
# the repository. Fails on any crash, trap, sanitizer report, leak, timeout (an input
# taking over 10 s) or allocation over 64 MiB (inputs are at most 16 KiB: a decoder that
# believes a length field before checking it would allocate far more).
#
#     bash Scripts/fuzz.sh [executions per target]     # default 20000 (the CI run)
#     FUZZ_MAX_TIME=600 bash Scripts/fuzz.sh 100000000  # stop each target after 600 s
#     bash Scripts/fuzz.sh --seeds                      # regenerate the committed corpus
#
# A failing input is kept in /tmp/mp-fuzz-artifacts/<target>/; reproduce it with
#     Fuzz/.build/release/fuzz-<target> /tmp/mp-fuzz-artifacts/<target>/crash-...
# libFuzzer's runtime ships with the Swift toolchain (lib/clang/*/lib/linux/
# libclang_rt.fuzzer-*.a); the targets link with the toolchain's lld because gold fails
# on the sanitized objects.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(frame binary-decoder)
executions=20000
write_seeds=false
case "${1:-}" in
  --seeds) write_seeds=true ;;
  "") ;;
  *[!0-9]*) echo "usage: $0 [executions | --seeds]" >&2; exit 2 ;;
  *) executions=$1 ;;
esac

runtime=$(ls "$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")"/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a 2>/dev/null | head -1 || true)
if [ -z "$runtime" ]; then
  echo "libFuzzer's runtime (libclang_rt.fuzzer) is not in this Swift toolchain: -sanitize=fuzzer cannot link" >&2
  exit 1
fi

echo "building the fuzz targets (release, -sanitize=fuzzer,address)"
build_log=$(mktemp)
if ! swift build -c release --package-path Fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld \
  >"$build_log" 2>&1; then
  cat "$build_log" >&2
  rm -f "$build_log"
  echo "building the fuzz targets failed" >&2
  exit 1
fi
grep -Ev '^\[[0-9]+/[0-9]+\]' "$build_log" || true
rm -f "$build_log"
bin=$(swift build -c release --package-path Fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld --show-bin-path)
for target in "${targets[@]}"; do
  [ -x "$bin/fuzz-$target" ] || { echo "the build did not produce fuzz-$target" >&2; exit 1; }
done

if $write_seeds; then
  for target in "${targets[@]}"; do
    mkdir -p "Fuzz/Corpus/$target"
    # Inputs that once crashed a target (regression-*) stay: they are not generated.
    find "Fuzz/Corpus/$target" -type f ! -name 'regression-*' -delete
    # Seed values are kept until exit on purpose; leak checking only matters while fuzzing.
    # Deterministic hashing: the same dictionary seeds every time (iteration order).
    SWIFT_DETERMINISTIC_HASHING=1 ASAN_OPTIONS=detect_leaks=0 FUZZ_WRITE_SEEDS="Fuzz/Corpus/$target" \
      "$bin/fuzz-$target"
  done
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for target in "${targets[@]}"; do
  mkdir -p "$work/$target/corpus" "$work/$target/artifacts"
  cp Fuzz/Corpus/"$target"/* "$work/$target/corpus/"
  extra=()
  [ -n "${FUZZ_MAX_TIME:-}" ] && extra+=(-max_total_time="$FUZZ_MAX_TIME")
  printf '\n== fuzz-%s: %s executions ==\n' "$target" "$executions"
  start=$(date +%s)
  if "$bin/fuzz-$target" -runs="$executions" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=64 -print_final_stats=1 -artifact_prefix="$work/$target/artifacts/" \
    "${extra[@]}" "$work/$target/corpus" >"$work/$target/log" 2>&1; then
    grep -E '^(#[0-9]+[[:space:]]+DONE|Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$work/$target/log" || true
    echo "fuzz-$target: no crash ($(($(date +%s) - start)) s)"
  else
    status=1
    tail -60 "$work/$target/log"
    mkdir -p /tmp/mp-fuzz-artifacts/"$target"
    cp "$work/$target/artifacts"/* /tmp/mp-fuzz-artifacts/"$target"/ 2>/dev/null || true
    echo "fuzz-$target FAILED; the input is in /tmp/mp-fuzz-artifacts/$target/" >&2
  fi
done
exit $status
