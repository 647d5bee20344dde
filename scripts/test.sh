#!/usr/bin/env bash
# Builds everything (including the benchmark) and runs the whole test suite.
# Tests that need root, namespaces or tools this machine lacks skip with a message saying what.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
swift build --build-tests
swift test --skip-build "$@"
