#!/usr/bin/env bash
# Runs libFuzzer targets with AddressSanitizer for a number of seconds each.
#   scripts/fuzz.sh [SECONDS] [TARGET|all]      defaults: 60 seconds, target "protocol"
# Targets (fuzz/targets/NAME.swift):
#   protocol  frames + CBOR + every message at once (the original all-in-one target)
#   frame     the frame decoder, whole versus split reads
#   cbor      the CBOR decoder, decode/encode round trip
#   messages  every message decoder (first byte picks the type)
#   files     the files subsystem's decoders: every fs message, and the tar reader (fsExtract, cp -r)
#   agent     the agent's frame dispatch: a real Agent serving one end of a socketpair per input
#   relay     the relay's frame dispatch: a real Relay between a fake agent and a fake client
# Protocol-only targets are compiled into the TetherProtocol module itself. The agent and relay
# targets link the library modules (built here with the same sanitizers) and import them.
# Seeds: fuzz/corpus/NAME (committed, written by scripts/fuzz-seeds.py) and fuzz/regressions/NAME
# (inputs that once crashed the target, committed by hand). New inputs go to
# .build-fuzz/corpus/NAME (not committed); a crash leaves its input in .build-fuzz/artifacts/
# and fails the script.
#
# The agent target executes what its inputs ask for (seeds exec /bin/true and friends), so it
# runs as nobody, in an empty scratch directory, with at most 64 processes (RLIMIT_NPROC).
set -euo pipefail
seconds=${1:-60}
target=${2:-protocol}
cd "$(dirname "$0")/.."
root=$PWD
out=$root/.build-fuzz
all_targets="frame cbor messages files protocol agent relay"

if [ "$target" = all ]; then
  for t in $all_targets; do "$0" "$seconds" "$t"; done
  exit 0
fi

mkdir -p "$out/corpus/$target" "$out/artifacts" "$out/modules" "fuzz/corpus/$target"
flags=(-sanitize=fuzzer,address -parse-as-library -O -g)
quiet() { grep -v "Cannot export local symbol" >&2 || true; }

# build_module NAME DIR [extra swiftc flags]: one library module as an object + .swiftmodule.
build_module() {
  local name=$1 dir=$2; shift 2
  local sources
  sources=$(find "$dir" -name '*.swift' | sort)
  swiftc "${flags[@]}" -wmo -enable-testing -module-name "$name" -I "$out/modules" "$@" \
    -emit-module -emit-module-path "$out/modules/$name.swiftmodule" \
    -c $sources -o "$out/modules/$name.o" 2> >(quiet)
}

build_csys() {
  mkdir -p "$out/modules/CSys"
  printf 'module CSys {\n  umbrella "%s/Sources/CSys/include"\n  export *\n}\n' "$root" > "$out/modules/CSys/module.modulemap"
  for c in Sources/CSys/*.c; do
    clang -O1 -g -fsanitize=address -I Sources/CSys/include -c "$c" -o "$out/modules/CSys-$(basename "$c" .c).o"
  done
}

# build_dispatch_target MODULE DIR FUZZ_MODULE: the agent or relay module (DIR), the library
# modules under it, and fuzz/targets/$target.swift linked against them into $binary.
build_dispatch_target() {
  local module=$1 dir=$2 fuzz_module=$3
  local csys=(-Xcc -fmodule-map-file="$out/modules/CSys/module.modulemap")
  build_csys
  build_module TetherProtocol Sources/Protocol
  build_module TetherPosix Sources/Posix "${csys[@]}"
  build_module TetherSeccomp Sources/Seccomp -I Sources/CSeccomp "${csys[@]}"
  build_module "$module" "$dir" -I Sources/CSeccomp "${csys[@]}"
  swiftc "${flags[@]}" -module-name "$fuzz_module" -I "$out/modules" -I Sources/CSeccomp "${csys[@]}" \
    "fuzz/targets/$target.swift" "$out"/modules/{TetherProtocol,TetherPosix,TetherSeccomp,$module}.o "$out"/modules/CSys-*.o \
    -lseccomp -o "$binary" 2> >(quiet)
}

binary="$out/fuzz-$target"
case "$target" in
  protocol|frame|cbor|messages|files)
    sources=$(find Sources/Protocol -name '*.swift' | sort)
    swiftc "${flags[@]}" -module-name TetherProtocol $sources "fuzz/targets/$target.swift" -o "$binary" 2> >(quiet) ;;
  agent) build_dispatch_target TetherAgent Sources/GuestAgent/Agent FuzzAgent ;;
  relay) build_dispatch_target TetherRelay Sources/HostRelay/Relay FuzzRelay ;;
  *)
    echo "unknown fuzz target: $target (one of: $all_targets, all)" >&2; exit 2 ;;
esac

run=("$binary")
corpora=("$out/corpus/$target" "$root/fuzz/corpus/$target")
# Inputs that once crashed a target (kept by hand, not by fuzz-seeds.py): replayed every run.
[ -d "$root/fuzz/regressions/$target" ] && corpora+=("$root/fuzz/regressions/$target")
artifacts="$out/artifacts/$target-"
if [ "$target" = agent ]; then
  # Inputs may start any program: run as nobody, with at most 64 processes, in a scratch
  # directory under /tmp that holds copies of everything it needs (the checkout may sit where
  # nobody cannot read, such as /root); new corpus entries and crashes are copied back after.
  scratch=$(mktemp -d /tmp/fuzz-agent.XXXXXX)
  mkdir -p "$scratch/corpus" "$scratch/seeds" "$scratch/artifacts" "$scratch/work"
  cp "$binary" "$scratch/"
  cp -r "$out/corpus/$target/." "$scratch/corpus/"
  cp -r "$root/fuzz/corpus/$target/." "$scratch/seeds/"
  [ -d "$root/fuzz/regressions/$target" ] && cp -r "$root/fuzz/regressions/$target/." "$scratch/seeds/"
  chown -R 65534:65534 "$scratch"
  chmod 0755 "$scratch"
  run=(setpriv --reuid=65534 --regid=65534 --clear-groups env -C "$scratch/work" SWIFT_BACKTRACE=enable=no prlimit --nproc=64 "$scratch/fuzz-$target")
  corpora=("$scratch/corpus" "$scratch/seeds")
  artifacts="$scratch/artifacts/$target-"
fi

# A Swift trap's message, not the runtime's backtracer (which trips AddressSanitizer itself).
export SWIFT_BACKTRACE=enable=no
echo "fuzzing $target for ${seconds}s"
set +e
"${run[@]}" -max_total_time="$seconds" -print_final_stats=1 -timeout=20 -rss_limit_mb=2048 -max_len=65536 \
  -artifact_prefix="$artifacts" "${corpora[@]}" 2>&1 \
  | grep -aE "^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::|==[0-9]+==|SUMMARY|Done)|ERROR|crash|deadly|Fatal error"
status=${PIPESTATUS[0]}
set -e
if [ -n "${scratch:-}" ]; then
  cp -n "$scratch/corpus/"* "$out/corpus/$target/" 2>/dev/null || true
  cp "$scratch/artifacts/"* "$out/artifacts/" 2>/dev/null || true
  rm -rf "$scratch"
fi
if [ "$status" -ne 0 ]; then
  echo "fuzzer $target failed (exit $status); inputs in $out/artifacts" >&2
  exit "$status"
fi
