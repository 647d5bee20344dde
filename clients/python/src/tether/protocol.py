"""The Tether wire protocol, version 1: frames, kinds, flags and message payloads.

Pure functions and plain data, no I/O. Every payload builder writes its keys in the order the
reference (Swift) implementation writes them and leaves out absent optional keys, so a message
built here is byte for byte the message the reference builds (the golden vectors check it).
docs/PROTOCOL.md in the repository is the specification.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import cbor2

PROTOCOL_VERSION = 1

#: Bytes of ``id``, ``flags`` and ``kind``: what the length prefix counts besides the payload.
HEADER_AFTER_LENGTH = 6
#: The whole header, length prefix included.
HEADER_BYTES = 10
#: Largest payload of any frame.
MAX_PAYLOAD = 1 << 20
#: Largest value of the length prefix.
MAX_LENGTH = MAX_PAYLOAD + HEADER_AFTER_LENGTH
#: Largest payload of a data frame (stdout, stderr, stdin) a sender writes; longer data is split.
MAX_DATA_PAYLOAD = 64 << 10
#: Unacknowledged data-frame payload a sender may have in flight, per session and direction.
WINDOW_BYTES = 256 << 10
#: A reader acknowledges at least every this many consumed bytes.
ACK_THRESHOLD = WINDOW_BYTES // 2
#: An exec's output window once the client acks ahead (PROTOCOL.md 8): with one 256 KiB window
#: in flight the program, agent, relay and client took turns; a relay allows this much.
OUTPUT_WINDOW_BYTES = 2 * WINDOW_BYTES

FLAG_END = 0x01
FLAG_START = 0x02

#: Every kind this version defines, by name.
KINDS: dict[str, int] = {
    "hello": 0x01, "error": 0x02, "ping": 0x03, "pong": 0x04, "shutdown": 0x05,
    "exec": 0x10, "started": 0x11, "stdout": 0x12, "stderr": 0x13, "stdin": 0x14,
    "stdinError": 0x15, "exited": 0x16, "done": 0x17, "failed": 0x18, "resize": 0x19,
    "signal": 0x1A, "kill": 0x1B, "ack": 0x1C,
    "listSessions": 0x20, "sessionList": 0x21, "attach": 0x22, "attached": 0x23,
    "detach": 0x24, "detached": 0x25, "logs": 0x26, "signalSession": 0x27,
    "processStart": 0x50, "processReady": 0x51, "processFailed": 0x52, "processList": 0x53,
    "processTable": 0x54, "processLogs": 0x55, "processLogPosition": 0x56, "processSignal": 0x57,
    "processWait": 0x58, "processEnded": 0x59, "processRemove": 0x5A,
    "fsStat": 0x30, "fsInfo": 0x31, "fsList": 0x32, "fsEntries": 0x33, "fsMkdir": 0x34, "fsRemove": 0x35,
    "fsRename": 0x36, "fsSetattr": 0x37, "fsRead": 0x38, "fsWrite": 0x39, "fsArchive": 0x3A, "fsExtract": 0x3B,
    "fsWatch": 0x3C, "fsEvents": 0x3D, "fsDone": 0x3E, "fsError": 0x3F,
    "exposePort": 0x40, "portExposed": 0x41, "unexposePort": 0x42, "listPorts": 0x43, "portList": 0x44,
    "tunnelOpen": 0x45, "tunnelOpened": 0x46,
}
KIND_NAMES: dict[int, str] = {code: name for name, code in KINDS.items()}
#: Kinds whose payload is raw bytes instead of one CBOR map.
DATA_KINDS = frozenset({KINDS["stdout"], KINDS["stderr"], KINDS["stdin"]})

HELLO, ERROR, PING, PONG, SHUTDOWN = 0x01, 0x02, 0x03, 0x04, 0x05
EXEC, STARTED, STDOUT, STDERR, STDIN, STDIN_ERROR = 0x10, 0x11, 0x12, 0x13, 0x14, 0x15
EXITED, DONE, FAILED, RESIZE, SIGNAL, KILL, ACK = 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C
LIST_SESSIONS, SESSION_LIST, ATTACH, ATTACHED, DETACH, DETACHED = 0x20, 0x21, 0x22, 0x23, 0x24, 0x25
LOGS, SIGNAL_SESSION = 0x26, 0x27
PROCESS_START, PROCESS_READY, PROCESS_FAILED, PROCESS_LIST, PROCESS_TABLE = 0x50, 0x51, 0x52, 0x53, 0x54
PROCESS_LOGS, PROCESS_LOG_POSITION, PROCESS_SIGNAL, PROCESS_WAIT, PROCESS_ENDED, PROCESS_REMOVE = 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A
#: The files subsystem (capability fs/1, docs/PROTOCOL.md "Files"). This package has no files
#: API yet; it knows the kinds, and `encode_message` writes their maps.
FS_KINDS = frozenset(code for name, code in KINDS.items() if name.startswith("fs"))

_HEADER = struct.Struct(">IIBB")


class FramingError(ValueError):
    """The byte stream cannot be split into frames any more (a length outside 6 ... 1 MiB + 6)."""


class PayloadError(ValueError):
    """A payload that is not the message its kind says."""


@dataclass(frozen=True)
class Frame:
    id: int
    kind: int
    payload: bytes = b""
    flags: int = 0

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, "unknown(0x%02x)" % self.kind)

    @property
    def is_data(self) -> bool:
        return self.kind in DATA_KINDS

    @property
    def start(self) -> bool:
        return bool(self.flags & FLAG_START)

    @property
    def end(self) -> bool:
        return bool(self.flags & FLAG_END)

    def message(self) -> dict[str, Any]:
        """The payload as the CBOR map it holds (only for kinds that are not data)."""
        return decode_message(self.payload)


def encode_frame(frame: Frame) -> bytes:
    if len(frame.payload) > MAX_PAYLOAD:
        raise ValueError("a frame carries at most %d payload bytes, not %d" % (MAX_PAYLOAD, len(frame.payload)))
    return _HEADER.pack(len(frame.payload) + HEADER_AFTER_LENGTH, frame.id, frame.flags, frame.kind) + frame.payload


def frame_bytes(id: int, kind: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return encode_frame(Frame(id, kind, payload, flags))


def parse_header(header: bytes) -> tuple[int, int, int, int]:
    """``(payload length, id, flags, kind)`` of a 10-byte header; FramingError if the length is invalid."""
    length, id, flags, kind = _HEADER.unpack(header)
    if length < HEADER_AFTER_LENGTH:
        raise FramingError("frame length %d is below the minimum of %d" % (length, HEADER_AFTER_LENGTH))
    if length > MAX_LENGTH:
        raise FramingError("frame length %d is above the maximum of %d" % (length, MAX_LENGTH))
    return length - HEADER_AFTER_LENGTH, id, flags, kind


def decode_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """Splits ``data`` into whole frames and the bytes of an incomplete one left over."""
    frames: list[Frame] = []
    offset = 0
    while len(data) - offset >= HEADER_BYTES:
        count, id, flags, kind = parse_header(data[offset:offset + HEADER_BYTES])
        if len(data) - offset - HEADER_BYTES < count:
            break
        start = offset + HEADER_BYTES
        frames.append(Frame(id, kind, bytes(data[start:start + count]), flags))
        offset = start + count
    return frames, bytes(data[offset:])


def decode_message(payload: bytes) -> dict[str, Any]:
    try:
        value = cbor2.loads(payload)
    except Exception as error:  # cbor2 raises several types
        raise PayloadError("payload is not valid CBOR: %s" % error) from None
    if not isinstance(value, dict):
        raise PayloadError("payload must be a CBOR map, found %s" % type(value).__name__)
    return value


def encode_message(message: Mapping[str, Any]) -> bytes:
    """One CBOR map, keys in the order given, None values left out."""
    return cbor2.dumps({key: value for key, value in message.items() if value is not None})


# MARK: payloads a client sends

OSString = Union[str, bytes]


def _os_string(value: OSString) -> OSString:
    """Text when the bytes are UTF-8, bytes otherwise (so non-UTF-8 file names pass unchanged)."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value)
    return value


def _sort_key(value: OSString) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def hello(role: str, name: str, pid: int, capabilities: Sequence[str] = (), version: int = PROTOCOL_VERSION,
          agent_version: Optional[str] = None, boot_ns: Optional[int] = None, ready_ns: Optional[int] = None) -> bytes:
    return encode_message({"version": version, "role": role, "name": name, "pid": pid,
                           "capabilities": list(capabilities), "agentVersion": agent_version,
                           "bootNs": boot_ns, "readyNs": ready_ns})


def error(code: str, message: str, errno: Optional[int] = None) -> bytes:
    return encode_message({"code": code, "message": message, "errno": errno})


def ping(nonce: int) -> bytes:
    return encode_message({"nonce": nonce})


def pong(nonce: int) -> bytes:
    return encode_message({"nonce": nonce})


def shutdown(grace_ms: Optional[int] = None) -> bytes:
    return encode_message({"graceMs": grace_ms})


DEFAULT_KILL_GRACE_MS = 2000
DEFAULT_DRAIN_MS = 250


def exec_request(argv: Sequence[OSString], env: Optional[Mapping[OSString, OSString]] = None,
                 cwd: Optional[OSString] = None, user: Optional[str] = None,
                 tty: Optional[tuple[int, int]] = None, stdin: bool = False,
                 timeout_ms: Optional[int] = None, kill_grace_ms: int = DEFAULT_KILL_GRACE_MS,
                 drain_ms: int = DEFAULT_DRAIN_MS,
                 rlimits: Optional[Mapping[str, tuple[Optional[int], Optional[int]]]] = None,
                 detach: bool = False, seccomp: Optional[str] = None) -> bytes:
    """The ``exec`` payload. ``tty`` is ``(rows, cols)``; ``rlimits`` maps a name to ``(soft, hard)``."""
    message: dict[str, Any] = {"argv": [_os_string(arg) for arg in argv]}
    if env:
        pairs = [(_os_string(k), _os_string(v)) for k, v in env.items()]
        message["env"] = dict(sorted(pairs, key=lambda pair: _sort_key(pair[0])))
    message["cwd"] = None if cwd is None else _os_string(cwd)
    message["user"] = user
    message["tty"] = None if tty is None else {"rows": tty[0], "cols": tty[1]}
    message["stdin"] = "pipe" if stdin else "none"
    message["timeoutMs"] = timeout_ms
    message["killGraceMs"] = kill_grace_ms
    message["drainMs"] = drain_ms
    if rlimits:
        message["rlimits"] = {name: [soft, hard] for name, (soft, hard) in sorted(rlimits.items())}
    message["detach"] = detach
    message["seccomp"] = seccomp
    # rlimit bounds may be None (unlimited): keep nulls inside the map, drop only absent keys.
    return cbor2.dumps({key: value for key, value in message.items() if value is not None})


def resize(rows: int, cols: int) -> bytes:
    return encode_message({"rows": rows, "cols": cols})


def signal(number: int) -> bytes:
    return encode_message({"number": number})


def empty() -> bytes:
    """The payload of kill, done, listSessions and detach."""
    return encode_message({})


def ack(bytes_: int) -> bytes:
    return encode_message({"bytes": bytes_})


def attach(session: int, replay: bool = True) -> bytes:
    return encode_message({"session": session, "replay": replay})


def logs(session: Optional[int] = None, follow: bool = False) -> bytes:
    return encode_message({"session": session, "follow": follow})


def signal_session(session: int, number: int) -> bytes:
    return encode_message({"session": session, "number": number})


# MARK: background processes (proc/1)

def process_start(name: str, exec_: Mapping[str, Any], ready: Optional[Mapping[str, Any]] = None,
                  wait_timeout_ms: int = 60000, log_bytes: int = 4 << 20, max_restarts: Optional[int] = None) -> bytes:
    """``processStart``: ``exec_`` is an exec map (as ``exec_request`` writes it, decoded); ``ready`` may hold
    ports, http ({host, port, path}), logs, files and execs."""
    return encode_message({"name": name, "exec": dict(exec_), "ready": dict(ready) if ready else None,
                           "waitTimeoutMs": wait_timeout_ms, "logBytes": log_bytes,
                           "restart": None if max_restarts is None else {"maxRestarts": max_restarts}})


def process_list(name: Optional[str] = None) -> bytes:
    return encode_message({"name": name})


def process_logs(name: str, from_: Optional[int] = None, tail: Optional[int] = None, follow: bool = False) -> bytes:
    return encode_message({"name": name, "from": from_, "tail": tail, "follow": follow})


def process_signal(name: str, number: int) -> bytes:
    return encode_message({"name": name, "number": number})


def process_named(name: str) -> bytes:
    """The payload of processWait and processRemove."""
    return encode_message({"name": name})


def _process_entry(p: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("name", "session", "pid", "state", "argv", "restarts", "startedNs", "readyNs", "exited", "logStart", "logEnd")
    return {key: p[key] for key in keys if p.get(key) is not None}


def process_ready(process: Mapping[str, Any]) -> bytes:
    """processReady, and processEnded (the same map)."""
    return encode_message({"process": _process_entry(process)})


def process_failed(code: str, message: str, condition: Optional[str], elapsed_ms: int,
                   exited: Optional[Mapping[str, Any]], tail: bytes, process: Mapping[str, Any]) -> bytes:
    return encode_message({"code": code, "message": message, "condition": condition, "elapsedMs": elapsed_ms,
                           "exited": exited, "tail": tail, "process": _process_entry(process)})


def process_table(processes: Iterable[Mapping[str, Any]]) -> bytes:
    return encode_message({"processes": [_process_entry(p) for p in processes]})


def process_log_position(offset: int, dropped_bytes: int = 0) -> bytes:
    return encode_message({"offset": offset, "droppedBytes": dropped_bytes})
def expose_port(guest_port: int, host_port: Optional[int] = None, host_addr: Optional[str] = None,
                name: Optional[str] = None, check: bool = True) -> bytes:
    """exposePort (capability port/1): the relay listens on host_addr:host_port for guest_port."""
    return encode_message({"guestPort": guest_port, "hostPort": host_port, "hostAddr": host_addr, "name": name,
                           "check": None if check else False})


def unexpose_port(guest_port: int) -> bytes:
    return encode_message({"guestPort": guest_port})


def list_ports() -> bytes:
    return encode_message({})


def tunnel_open(guest_port: int, request: int, probe: bool = False) -> bytes:
    """The first frame (id 0) a relay writes on a connection to the agent's tunnel endpoint."""
    return encode_message({"guestPort": guest_port, "request": request, "probe": True if probe else None})


# MARK: payloads a server sends (for tests and tools that serve the protocol)

def port_info(guest_port: int, host_addr: str, host_port: int, name: Optional[str] = None, listening: bool = True,
              problem: Optional[str] = None, connections: int = 0, refusals: int = 0,
              last_refusal: Optional[str] = None) -> dict[str, Any]:
    info = {"guestPort": guest_port, "hostAddr": host_addr, "hostPort": host_port, "name": name,
            "listening": None if listening else False, "problem": problem,
            "connections": connections or None, "refusals": refusals or None, "lastRefusal": last_refusal}
    return {key: value for key, value in info.items() if value is not None}


def port_exposed(port: dict[str, Any]) -> bytes:
    return encode_message({"port": port})


def port_list(ports: list[dict[str, Any]]) -> bytes:
    return encode_message({"ports": ports})


def tunnel_opened(address: Optional[str] = None, listeners: Optional[list[str]] = None) -> bytes:
    return encode_message({"address": address, "listeners": listeners})


def started(pid: int) -> bytes:
    return encode_message({"pid": pid})


def stdin_error(errno: int, message: str) -> bytes:
    return encode_message({"errno": errno, "message": message})


def exited(code: Optional[int] = None, signal: Optional[int] = None, core_dumped: bool = False) -> bytes:
    return encode_message({"code": code, "signal": signal, "coreDumped": core_dumped})


def failed(kind: str, errno: int, stage: str, message: str) -> bytes:
    return encode_message({"kind": kind, "errno": errno, "stage": stage, "message": message})


def attached(session: int, pid: int, tty: bool, dropped_bytes: int) -> bytes:
    return encode_message({"session": session, "pid": pid, "tty": tty, "droppedBytes": dropped_bytes})


def detached(session: int) -> bytes:
    return encode_message({"session": session})


def session_list(sessions: Iterable[Mapping[str, Any]]) -> bytes:
    """``sessions``: maps with session, pid, argv, tty, detached, attached, startedNs and an optional
    exited map (code / signal / coreDumped)."""
    items = []
    for s in sessions:
        item = {"session": s["session"], "pid": s["pid"], "argv": list(s.get("argv", [])), "tty": s.get("tty", False),
                "detached": s.get("detached", False), "attached": s.get("attached", False),
                "startedNs": s.get("startedNs", 0)}
        if s.get("exited") is not None:
            e = s["exited"]
            item["exited"] = {k: v for k, v in (("code", e.get("code")), ("signal", e.get("signal")),
                                                ("coreDumped", e.get("coreDumped", False))) if v is not None}
        items.append(item)
    return encode_message({"sessions": items})


@dataclass
class Hello:
    version: int
    role: str
    name: str = ""
    pid: int = 0
    capabilities: list[str] = field(default_factory=list)
    agent_version: Optional[str] = None
    boot_ns: Optional[int] = None
    ready_ns: Optional[int] = None

    @classmethod
    def decode(cls, payload: bytes) -> "Hello":
        m = decode_message(payload)
        version, role = m.get("version"), m.get("role")
        if not isinstance(version, int) or not isinstance(role, str):
            raise PayloadError("hello needs an integer 'version' and a text 'role'")
        caps = m.get("capabilities") or []
        return cls(version, role, m.get("name") or "", m.get("pid") or 0,
                   [c for c in caps if isinstance(c, str)], m.get("agentVersion"), m.get("bootNs"), m.get("readyNs"))

    def supports(self, capability: str) -> bool:
        """Whether the peer listed ``capability``: an exact ``"pty/1"``, or any version of a bare ``"pty"``."""
        if "/" in capability:
            return capability in self.capabilities
        return any(listed.partition("/")[0] == capability for listed in self.capabilities)
