#!/usr/bin/env python3
"""The Python client's exec round trip through a relay, next to the Swift client's.

    python3 clients/python/bench.py [--count N] [--build-dir DIR] [--swift]

Starts an agent and a `tether relay` (no exec.log) from the build directory (default
.build/release if it has tether-bench, else .build/debug; the agent is the one tether-bench
takes: $TETHER_AGENT_STATIC, else .build-static/tether-agent), then times `exec(["/bin/true"])` N times after a warm-up, with the
synchronous client and with the asyncio client. With --swift it then runs `tether-bench --quick`
from the same directory and prints its "exec /bin/true via relay median" beside these, and the
ratio (target: within 1.3x). Needs the tether package importable (pip install ./clients/python).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tether
from tether import aio

REPOSITORY = Path(__file__).resolve().parents[2]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(fraction * len(ordered) + 0.999999) - 1))]


def wait_for(path: Path, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("%s did not start" % what)
        time.sleep(0.01)


def time_sync(address: str, count: int) -> list[float]:
    with tether.connect(address, name="bench-py") as client:
        for _ in range(min(100, count)):
            client.exec(["/bin/true"])
        timings = []
        for _ in range(count):
            start = time.perf_counter_ns()
            output = client.exec(["/bin/true"])
            timings.append((time.perf_counter_ns() - start) / 1000)
            if output.exit_code != 0:
                raise SystemExit("/bin/true exited %d" % output.exit_code)
    return timings


def time_async(address: str, count: int) -> list[float]:
    async def run() -> list[float]:
        async with await aio.connect(address, name="bench-py-async") as client:
            for _ in range(min(100, count)):
                await client.exec(["/bin/true"])
            timings = []
            for _ in range(count):
                start = time.perf_counter_ns()
                await client.exec(["/bin/true"])
                timings.append((time.perf_counter_ns() - start) / 1000)
            return timings

    return asyncio.run(run())


def swift_median(build_dir: Path) -> float:
    bench = build_dir / "tether-bench"
    if not bench.exists():
        raise SystemExit("%s is not built (swift build -c release --product tether-bench)" % bench)
    output = subprocess.run([str(bench), "--quick"], cwd=REPOSITORY, capture_output=True, text=True, check=True).stdout
    match = re.search(r"exec /bin/true via relay median:\s*([0-9.]+)\s*(\S+)", output)
    if not match:
        raise SystemExit("tether-bench printed no exec median:\n" + output)
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 1, "µs": 1, "ms": 1000, "ns": 0.001}.get(unit, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--build-dir", type=Path)
    parser.add_argument("--swift", action="store_true", help="also run tether-bench --quick and compare")
    options = parser.parse_args()
    build_dir = options.build_dir
    if build_dir is None:
        release = REPOSITORY / ".build" / "release"
        build_dir = release if (release / "tether-bench").exists() else REPOSITORY / ".build" / "debug"
    # The agent tether-bench uses: $TETHER_AGENT_STATIC, else scripts/build-agent.sh's, else the build's.
    static = REPOSITORY / ".build-static" / "tether-agent"
    agent_binary = os.environ.get("TETHER_AGENT_STATIC") or (str(static) if static.exists() else str(build_dir / "tether-agent"))
    print("binaries: %s (agent %s)" % (build_dir, agent_binary))

    with tempfile.TemporaryDirectory(prefix="tether-pybench-") as directory:
        d = Path(directory)
        agent = subprocess.Popen([agent_binary, "--listen", "unix:%s/agent.sock" % d],
                                 stdout=subprocess.DEVNULL, stderr=open(d / "agent.log", "wb"))
        relay = None
        try:
            wait_for(d / "agent.sock", agent, "the agent")
            relay = subprocess.Popen([str(build_dir / "tether"), "relay", "--agent", "unix:%s/agent.sock" % d,
                                      "--listen", "unix:%s/relay.sock" % d, "--no-log"],
                                     stdout=subprocess.DEVNULL, stderr=open(d / "relay.log", "wb"))
            wait_for(d / "relay.sock", relay, "the relay")
            address = "unix:%s/relay.sock" % d
            sync = time_sync(address, options.count)
            asynchronous = time_async(address, options.count)
        finally:
            for process in (relay, agent):
                if process is not None:
                    process.kill()
                    process.wait()

    py_median = statistics.median(sync)
    print("python exec /bin/true via relay median: %.1f us (p99 %.1f us, %d runs)"
          % (py_median, percentile(sync, 0.99), len(sync)))
    print("python asyncio exec /bin/true via relay median: %.1f us (p99 %.1f us)"
          % (statistics.median(asynchronous), percentile(asynchronous, 0.99)))
    if options.swift:
        swift = swift_median(build_dir)
        print("swift exec /bin/true via relay median (tether-bench --quick): %.1f us" % swift)
        print("python / swift: %.2fx (target <= 1.3x), asyncio / swift: %.2fx"
              % (py_median / swift, statistics.median(asynchronous) / swift))


if __name__ == "__main__":
    sys.exit(main())
