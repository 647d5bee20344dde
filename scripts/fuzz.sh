#!/usr/bin/env bash
# Runs a libFuzzer target with AddressSanitizer for a number of seconds.
#   scripts/fuzz.sh [SECONDS] [TARGET]      defaults: 60 seconds, target "protocol"
# Targets live in fuzz/targets/NAME.swift and are compiled into the modules they exercise.
# Seeds: fuzz/corpus/NAME (committed). New inputs go to .build-fuzz/corpus/NAME (not committed);
# a crash leaves its input in .build-fuzz/artifacts/ and fails the script.
set -euo pipefail
seconds=${1:-60}
target=${2:-protocol}
cd "$(dirname "$0")/.."
out=.build-fuzz
mkdir -p "$out/corpus/$target" "$out/artifacts"

case "$target" in
  protocol)
    sources=$(find Sources/Protocol -name '*.swift' | sort)
    module=TetherProtocol ;;
  *)
    echo "unknown fuzz target: $target" >&2; exit 2 ;;
esac

binary="$out/fuzz-$target"
# -parse-as-library: the target has no main; libFuzzer provides it.
swiftc -sanitize=fuzzer,address -parse-as-library -O -g -module-name "$module" \
  $sources "fuzz/targets/$target.swift" -o "$binary" 2> >(grep -v "Cannot export local symbol" >&2)

echo "fuzzing $target for ${seconds}s"
"$binary" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$out/artifacts/$target-" "$out/corpus/$target" "fuzz/corpus/$target" 2>&1 \
  | grep -E "^(#[0-9]+ +(INITED|DONE)|stat::|==[0-9]+==|SUMMARY|Done)|ERROR|crash|deadly" || true
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  echo "fuzzer $target failed (exit $status); inputs in $out/artifacts" >&2
  exit "$status"
fi
