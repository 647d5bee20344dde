#!/usr/bin/env bash
# Builds everything (including the benchmark and the static agent) and runs the whole suite.
# Tests that need root, namespaces or tools this machine lacks skip with a message saying what.
# With no arguments, the timing-sensitive fault test (a flooding client's effect on others'
# round trips) then runs alone: beside the rest of the suite it would measure the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
# The static agent: what tests run as PID 1 inside namespaces and put into root filesystems.
TETHER_AGENT_STATIC="$(scripts/build-agent.sh)"
export TETHER_AGENT_STATIC
swift build --build-tests
swift test --skip-build "$@"
if [ $# -eq 0 ]; then
    TETHER_TEST_ALONE=1 swift test --skip-build --filter 'FaultTests/aClientFloodingGarbageFrames'
fi
