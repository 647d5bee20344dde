"""Fixtures: a real agent and relay from the repository's build (.build/debug, or $TETHER_BUILD_DIR),
started as the Swift end-to-end tests start them: `tether-agent --listen unix:DIR/agent.sock` on
the host, and `tether relay --agent unix:DIR/agent.sock --listen unix:DIR/relay.sock`."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

import tether

REPOSITORY = Path(__file__).resolve().parents[3]
GOLDEN = REPOSITORY / "Tests" / "ProtocolTests" / "Golden"


def build_dir() -> Path:
    return Path(os.environ.get("TETHER_BUILD_DIR") or REPOSITORY / ".build" / "debug")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    result: list[int] = []
    frontier = [pid]
    while frontier:
        below = children.get(frontier.pop(), [])
        result.extend(below)
        frontier.extend(below)
    return result


class LiveRelay:
    def __init__(self, directory: Path) -> None:
        agent_binary, tether_binary = build_dir() / "tether-agent", build_dir() / "tether"
        for binary in (agent_binary, tether_binary):
            if not binary.exists():
                pytest.skip("%s is not built (swift build, or set TETHER_BUILD_DIR)" % binary)
        self.directory = directory
        self.socket_path = str(directory / "relay.sock")
        self.address = "unix:" + self.socket_path
        agent_socket = "unix:" + str(directory / "agent.sock")
        self.agent = subprocess.Popen([str(agent_binary), "--listen", agent_socket],
                                      stdout=subprocess.DEVNULL, stderr=open(directory / "agent.log", "wb"))
        self.relay_command = [str(tether_binary), "relay", "--agent", agent_socket, "--listen", self.address,
                              "--log-dir", str(directory), "--agent-timeout", "5s"]
        self.relay_log = directory / "relay.log"
        self.start_relay()

    def start_relay(self) -> None:
        """Starts the relay and waits until it serves clients."""
        self.relay_log.write_bytes(b"")
        self.relay = subprocess.Popen(self.relay_command, stdout=subprocess.DEVNULL, stderr=open(self.relay_log, "ab"))
        deadline = time.monotonic() + 60
        while b"serving clients" not in self.relay_log.read_bytes():
            if self.relay.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the relay did not start serving:\n" + self.relay_log.read_text(errors="replace"))
            time.sleep(0.02)

    def restart_relay(self) -> None:
        """Kills the relay (SIGKILL) and starts a new one on the same sockets."""
        self.relay.kill()
        self.relay.wait()
        self.start_relay()

    def client(self, **options: object) -> tether.Client:
        return tether.connect(self.address, name="pytest", **options)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.relay.kill()
        left = descendants(self.agent.pid)
        self.agent.kill()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.relay.wait()
        self.agent.wait()


@pytest.fixture
def live() -> Iterator[LiveRelay]:
    with tempfile.TemporaryDirectory(prefix="tether-py-") as directory:
        relay = LiveRelay(Path(directory))
        try:
            yield relay
        finally:
            relay.stop()


@pytest.fixture
def client(live: LiveRelay) -> Iterator[tether.Client]:
    c = live.client()
    try:
        yield c
    finally:
        c.close()
