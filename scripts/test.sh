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
# The guest trees the boot tests use, built (or found in the cache) before the tests start: a
# first build takes minutes (apt-get download, debootstrap), and a test that waits for it holds
# one of the test runner's few threads meanwhile, so every other test's time limit runs out.
if [ "$(id -u)" -eq 0 ]; then
    rootfs/build.sh --agent "$TETHER_AGENT_STATIC" >/dev/null
    if [ -x /usr/sbin/debootstrap ]; then
        for flavor in systemd openrc; do rootfs/debootstrap.sh --agent "$TETHER_AGENT_STATIC" "$flavor" >/dev/null; done
    fi
fi
swift build --build-tests
swift test --skip-build "$@"
if [ $# -eq 0 ]; then
    TETHER_TEST_ALONE=1 swift test --skip-build --filter 'FaultTests/aClientFloodingGarbageFrames'
fi
