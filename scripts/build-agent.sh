#!/usr/bin/env bash
# Builds the fully static, stripped guest agent and prints its path on stdout.
# This is the binary a VM image or rootfs embeds (no Swift runtime or libc needed beside it).
#
# - libseccomp: CSeccomp's module map links -lseccomp; with -static-executable the linker only
#   looks at archives, so Debian's libseccomp.a (libseccomp-dev) is what goes in.
# - The regex modules (_StringProcessing, _RegexParser, ~1 MB) are imported into every Swift
#   file implicitly and then linked whole; the agent uses no regex, so that import is off here
#   (the debug build keeps the default, so code that needs it fails to build here, not at run time).
# - --gc-sections drops unreferenced code; .init_array (the CSys early-init constructor) is kept.
# - --icf=all folds functions whose code is identical (generic specialisations, thunks):
#   147 KB less (7.72 -> 7.57 MB).
# - lld (shipped with Swift) links instead of gold: 40 KB less (8,297,072 -> 8,257,208 bytes) at
#   the same flags, and it answers --why-live=SYMBOL (what keeps a symbol in the link).
# What the rest is: README, Performance.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
scratch=.build-static
flags=(-c release --product tether-agent --scratch-path "$scratch"
       -Xswiftc -static-executable -Xswiftc -use-ld=lld
       -Xlinker --gc-sections -Xlinker --icf=all
       -Xswiftc -Xfrontend -Xswiftc -disable-implicit-string-processing-module-import)
swift build "${flags[@]}" >&2
bin="$(swift build "${flags[@]}" --show-bin-path)/tether-agent"
strip -o "$scratch/tether-agent" "$bin"
if readelf -l "$scratch/tether-agent" | grep -q INTERP; then
  echo "build-agent.sh: $scratch/tether-agent is not static" >&2
  exit 1
fi
echo "build-agent.sh: $(stat -c %s "$scratch/tether-agent") bytes stripped" >&2
echo "$PWD/$scratch/tether-agent"
