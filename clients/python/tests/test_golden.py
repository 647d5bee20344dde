"""The golden vectors (Tests/ProtocolTests/Golden) checked byte for byte in both directions
against this package's frame codec and message builders; the Swift tests check the same files."""
from __future__ import annotations

import json
from typing import Any

import pytest

from tether import protocol as p
from tether.aio import AsyncClient

from conftest import GOLDEN


def load() -> list[tuple[str, dict[str, Any]]]:
    vectors = []
    for path in sorted(GOLDEN.glob("*.json")):
        document = json.loads(path.read_text())
        for vector in document["vectors"]:
            vectors.append((path.name, vector))
    return vectors


VECTORS = load()


def cbor_value(meaning: Any) -> Any:
    """The meaning with {"$bytes": HEX} values and "$bytes:HEX" keys as Python bytes."""
    if isinstance(meaning, dict):
        if list(meaning) == ["$bytes"]:
            return bytes.fromhex(meaning["$bytes"])
        return {(bytes.fromhex(k[7:]) if k.startswith("$bytes:") else k): cbor_value(v) for k, v in meaning.items()}
    if isinstance(meaning, list):
        return [cbor_value(v) for v in meaning]
    return meaning


def ordered(value: Any) -> Any:
    """Maps as lists of pairs, so that comparing two values compares key order too."""
    if isinstance(value, dict):
        return [("map", ordered(k), ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [ordered(v) for v in value]
    if isinstance(value, bool):
        return ("bool", value)
    return value


def flags_of(names: list[str]) -> int:
    return sum({"start": p.FLAG_START, "end": p.FLAG_END}[name] for name in names)


def test_every_kind_has_a_vector_file() -> None:
    files = {path.stem: json.loads(path.read_text()) for path in GOLDEN.glob("*.json")}
    assert set(files) == set(p.KINDS), "kinds without vectors: %s" % (set(p.KINDS) - set(files))
    for name, document in files.items():
        assert document["code"] == p.KINDS[name]
        assert document["vectors"], name


@pytest.mark.parametrize("file,vector", VECTORS, ids=[v["name"] for _, v in VECTORS])
def test_bytes_decode_to_their_meaning(file: str, vector: dict[str, Any]) -> None:
    frames, rest = p.decode_frames(bytes.fromhex(vector["hex"]))
    assert len(frames) == 1 and rest == b""
    frame, meaning = frames[0], vector["frame"]
    assert (frame.id, frame.flags, frame.kind_name) == (meaning["id"], flags_of(meaning["flags"]), meaning["kind"])
    assert file == frame.kind_name + ".json"
    if frame.is_data:
        assert frame.payload == bytes.fromhex(meaning["data"])
    else:
        assert ordered(p.decode_message(frame.payload)) == ordered(cbor_value(meaning["payload"]))


@pytest.mark.parametrize("file,vector", VECTORS, ids=[v["name"] for _, v in VECTORS])
def test_meanings_encode_to_their_bytes(file: str, vector: dict[str, Any]) -> None:
    meaning = vector["frame"]
    kind = p.KINDS[meaning["kind"]]
    if kind in p.DATA_KINDS:
        payload = bytes.fromhex(meaning["data"])
    else:
        payload = typed_payload(meaning["kind"], cbor_value(meaning["payload"]))
        assert payload == p.encode_message(cbor_value(meaning["payload"]))
    assert p.frame_bytes(meaning["id"], kind, payload, flags_of(meaning["flags"])).hex() == vector["hex"]


def typed_payload(kind: str, m: dict[str, Any]) -> bytes:
    """The payload as this package's builder for ``kind`` writes it from the meaning's values."""
    if kind == "hello":
        return p.hello(m["role"], m["name"], m["pid"], m["capabilities"], m["version"], m.get("agentVersion"),
                       m.get("bootNs"), m.get("readyNs"))
    if kind == "error":
        return p.error(m["code"], m["message"], m.get("errno"))
    if kind in ("ping", "pong"):
        return getattr(p, kind)(m["nonce"])
    if kind == "shutdown":
        return p.shutdown(m.get("graceMs"))
    if kind == "exec":
        tty = m.get("tty")
        return p.exec_request(m["argv"], env=m.get("env"), cwd=m.get("cwd"), user=m.get("user"),
                              tty=None if tty is None else (tty["rows"], tty["cols"]), stdin=m["stdin"] == "pipe",
                              timeout_ms=m.get("timeoutMs"), kill_grace_ms=m["killGraceMs"], drain_ms=m["drainMs"],
                              rlimits={k: tuple(v) for k, v in (m.get("rlimits") or {}).items()},
                              detach=m["detach"], seccomp=m.get("seccomp"))
    if kind == "started":
        return p.started(m["pid"])
    if kind == "stdinError":
        return p.stdin_error(m["errno"], m["message"])
    if kind == "exited":
        return p.exited(m.get("code"), m.get("signal"), m["coreDumped"])
    if kind == "failed":
        return p.failed(m["kind"], m["errno"], m["stage"], m["message"])
    if kind in ("done", "kill", "listSessions", "detach"):
        assert m == {}
        return p.empty()
    if kind == "resize":
        return p.resize(m["rows"], m["cols"])
    if kind == "signal":
        return p.signal(m["number"])
    if kind == "ack":
        return p.ack(m["bytes"])
    if kind == "sessionList":
        return p.session_list(m["sessions"])
    if kind == "attach":
        return p.attach(m["session"], m["replay"])
    if kind == "attached":
        return p.attached(m["session"], m["pid"], m["tty"], m["droppedBytes"])
    if kind == "detached":
        return p.detached(m["session"])
    if kind == "logs":
        return p.logs(m.get("session"), m["follow"])
    if kind == "signalSession":
        return p.signal_session(m["session"], m["number"])
    if kind == "processStart":
        return p.process_start(m["name"], m["exec"], m.get("ready"), m["waitTimeoutMs"], m["logBytes"],
                               (m.get("restart") or {}).get("maxRestarts"))
    if kind == "processList":
        return p.process_list(m.get("name"))
    if kind == "processLogs":
        return p.process_logs(m["name"], m.get("from"), m.get("tail"), m["follow"])
    if kind == "processSignal":
        return p.process_signal(m["name"], m["number"])
    if kind in ("processWait", "processRemove"):
        return p.process_named(m["name"])
    if kind in ("processReady", "processEnded"):
        return p.process_ready(m["process"])
    if kind == "processFailed":
        return p.process_failed(m["code"], m["message"], m.get("condition"), m["elapsedMs"], m.get("exited"), m["tail"],
                                m["process"])
    if kind == "processTable":
        return p.process_table(m["processes"])
    if kind == "processLogPosition":
        return p.process_log_position(m["offset"], m["droppedBytes"])
    if p.KINDS[kind] in p.FS_KINDS:
        # No files API in this package yet: the map is written as the meaning lists it.
        return p.encode_message(m)
    if kind == "exposePort":
        return p.expose_port(m["guestPort"], m.get("hostPort"), m.get("hostAddr"), m.get("name"), m.get("check", True))
    if kind == "unexposePort":
        return p.unexpose_port(m["guestPort"])
    if kind == "listPorts":
        return p.list_ports()
    if kind in ("portExposed", "portList"):
        ports = [m["port"]] if kind == "portExposed" else m["ports"]
        built = [p.port_info(x["guestPort"], x["hostAddr"], x["hostPort"], x.get("name"), x.get("listening", True),
                             x.get("problem"), x.get("connections", 0), x.get("refusals", 0), x.get("lastRefusal"))
                 for x in ports]
        return p.port_exposed(built[0]) if kind == "portExposed" else p.port_list(built)
    if kind == "tunnelOpen":
        return p.tunnel_open(m["guestPort"], m["request"], m.get("probe", False))
    if kind == "tunnelOpened":
        return p.tunnel_opened(m.get("address"), m.get("listeners"))
    raise AssertionError("no builder for %s" % kind)


@pytest.mark.parametrize("file,vector", [(f, v) for f, v in VECTORS if v["frame"]["kind"] == "hello"],
                         ids=lambda x: x["name"] if isinstance(x, dict) else x)
def test_hello_vectors_read_as_hellos(file: str, vector: dict[str, Any]) -> None:
    frame = p.decode_frames(bytes.fromhex(vector["hex"]))[0][0]
    hello = p.Hello.decode(frame.payload)
    assert hello.role == vector["frame"]["payload"]["role"]
    assert all(hello.supports(c) for c in hello.capabilities)


def test_server_frames_reach_a_session_as_events() -> None:
    """The client's reading side (what turns frames into events and errors) against the vectors
    of every kind a server sends on a session."""
    import asyncio

    async def run() -> None:
        client = AsyncClient("/nonexistent", "golden", 0, None)
        session = client._start(p.EXEC, p.exec_request(["true"]), "exec", {})
        kinds = []
        for _, vector in VECTORS:
            name = vector["frame"]["kind"]
            if name in ("started", "stdout", "stderr", "stdinError", "exited", "ack", "attached", "sessionList"):
                frame = p.decode_frames(bytes.fromhex(vector["hex"]))[0][0]
                client._session_frame(session, p.Frame(session.id, frame.kind, frame.payload, 0))
                kinds.append(name)
        assert session.end is None and session.exit is not None
        failed = [v for _, v in VECTORS if v["name"] == "failed-notFound"][0]
        frame = p.decode_frames(bytes.fromhex(failed["hex"]))[0][0]
        client._session_frame(session, frame)
        error = session.failure()
        assert isinstance(error, FileNotFoundError) and error.errno == 2 and error.stage == "exec"

    asyncio.run(run())
