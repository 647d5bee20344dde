#!/usr/bin/env bash
# Runs the Python client's tests (clients/python/tests) with pytest against the agent and relay
# already built in .build/debug (scripts/test.sh or `swift build` builds them; this builds
# nothing). The client, cbor2 and pytest go into a virtual environment, .build/python-venv
# (Debian's python3-venv; cbor2 and pytest come from PyPI). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
for binary in tether tether-agent; do
    if [ ! -x ".build/debug/$binary" ]; then
        echo "python-tests.sh: .build/debug/$binary is missing; build first (swift build)" >&2
        exit 1
    fi
done
venv=.build/python-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check ./clients/python pytest
# A local directory of an unchanged version would count as installed: take this tree's sources.
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall ./clients/python
# pytest exits 5 when it collected no tests: a failure here, since there are tests to run.
TETHER_BUILD_DIR="$PWD/.build/debug" "$venv/bin/python" -m pytest -rs clients/python/tests "$@"
