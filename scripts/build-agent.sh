#!/usr/bin/env bash
# Builds the fully static, stripped guest agent and prints its path on stdout.
# This is the binary a VM image or rootfs embeds (no Swift runtime or libc needed beside it).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
scratch=.build-static
swift build -c release --product tether-agent --scratch-path "$scratch" \
  -Xswiftc -static-executable -Xlinker --gc-sections >&2
bin="$(swift build -c release --product tether-agent --scratch-path "$scratch" --show-bin-path)/tether-agent"
strip -o "$scratch/tether-agent" "$bin"
echo "$PWD/$scratch/tether-agent"
