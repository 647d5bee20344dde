#!/usr/bin/env python3
"""Writes the golden vectors: one file per frame kind, KIND.json, each vector a frame's bytes
(hex) beside its meaning. Run from anywhere: python3 generate.py (needs cbor2).

Each meaning below lists payload keys in the order the reference implementation writes them
and leaves out what it leaves out, so the hex is the exact encoding. The bytes are produced here
from the meaning by a plain CBOR encoder (cbor2) and a 10-byte header; the Swift and Python tests
then check that their own message types encode each meaning to these bytes and decode these
bytes to this meaning. Edit a meaning here, run this, and both test suites say who disagrees.
"""
import json
import os
import struct

import cbor2

KINDS = {
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
FLAGS = {"end": 0x01, "start": 0x02}
DATA = {"stdout", "stderr", "stdin"}

AGENT_CAPS = ["exec/1", "pty/1", "stdin/1", "signal/1", "rlimit/1", "detach/1", "session/1", "shutdown/1", "seccomp/1"]


def b(hex_text):
    """A CBOR byte string in a meaning (JSON has none): {"$bytes": "hex"}; as a map key, "$bytes:hex"."""
    return {"$bytes": hex_text}


def v(name, kind, id, flags, payload=None, data=None, note=None):
    frame = {"id": id, "flags": flags, "kind": kind}
    if kind in DATA:
        frame["data"] = data
    else:
        frame["payload"] = payload
    vector = {"name": name}
    if note:
        vector["note"] = note
    vector["frame"] = frame
    return vector


VECTORS = [
    # control channel (id 0)
    v("hello-agent", "hello", 0, [], {"version": 1, "role": "agent", "name": "sandbox-1", "pid": 1,
                                      "capabilities": AGENT_CAPS, "agentVersion": "0.1.0",
                                      "bootNs": 123456789, "readyNs": 234567890}),
    v("hello-relay", "hello", 0, [], {"version": 1, "role": "relay", "name": "dev", "pid": 4711,
                                      "capabilities": AGENT_CAPS + ["relay/1"], "agentVersion": "0.1.0"}),
    v("hello-client", "hello", 0, [], {"version": 1, "role": "client", "name": "tether-python", "pid": 31337,
                                       "capabilities": []}),
    v("error-badPayload", "error", 0, [], {"code": "badPayload", "message": "exec: required key 'argv' is missing",
                                           "errno": 22}),
    v("error-helloRequired", "error", 3, ["end"], {"code": "helloRequired",
                                                   "message": "send hello before any request"},
      note="a request before the client's hello, answered on the request's id"),
    v("error-tooManyClients", "error", 0, [], {"code": "tooManyClients",
                                               "message": "the relay serves at most 64 clients"}),
    v("error-unknownKind-session", "error", 9, ["end"], {"code": "unknownKind",
                                                         "message": "kind unknown(0xee) cannot start a session"}),
    v("ping", "ping", 0, [], {"nonce": 18446744073709551615}),
    v("pong", "pong", 0, [], {"nonce": 7}),
    v("shutdown", "shutdown", 0, [], {"graceMs": 5000}),
    v("shutdown-default-grace", "shutdown", 0, [], {}),
    # exec sessions
    v("exec-full", "exec", 1, ["start"], {
        "argv": ["/bin/sh", "-c", "echo hi"], "env": {"A": "1", "LANG": "C.UTF-8"}, "cwd": "/tmp",
        "user": "sandbox:sandbox", "tty": {"rows": 24, "cols": 80}, "stdin": "pipe", "timeoutMs": 10000,
        "killGraceMs": 500, "drainMs": 100, "rlimits": {"core": [0, None], "nofile": [1024, 4096]},
        "detach": True, "seccomp": "restricted"}),
    v("exec-minimal", "exec", 2, ["start"], {"argv": ["true"], "stdin": "none", "killGraceMs": 2000,
                                             "drainMs": 250, "detach": False}),
    v("exec-bytes-argument", "exec", 3, ["start"], {
        "argv": ["ls", b("636166e9")], "env": {"$bytes:ff": b("fe")}, "stdin": "none", "killGraceMs": 2000,
        "drainMs": 250, "detach": False},
      note="argv and env entries that are not UTF-8 travel as byte strings"),
    v("exec-seccomp-none", "exec", 4, ["start"], {"argv": ["strace", "-f", "true"], "stdin": "none",
                                                  "killGraceMs": 2000, "drainMs": 250, "detach": False,
                                                  "seccomp": "none"}),
    v("started", "started", 1, [], {"pid": 4242}),
    v("stdout", "stdout", 1, [], data="68656c6c6f0a"),
    v("stdout-empty", "stdout", 1, [], data=""),
    v("stderr", "stderr", 1, [], data="000102ff"),
    v("stdin", "stdin", 1, [], data="6563686f2068690a"),
    v("stdin-eof", "stdin", 1, ["end"], data="", note="closes the program's stdin"),
    v("stdinError", "stdinError", 1, [], {"errno": 32, "message": "Broken pipe"}),
    v("exited-code", "exited", 1, [], {"code": 3, "coreDumped": False}),
    v("exited-negative-code", "exited", 1, [], {"code": -1, "coreDumped": False}),
    v("exited-signal", "exited", 1, [], {"signal": 9, "coreDumped": True}),
    v("done", "done", 1, ["end"], {}),
    v("failed-notFound", "failed", 2, ["end"], {"kind": "notFound", "errno": 2, "stage": "exec",
                                                "message": "no such file"}),
    v("failed-badCwd", "failed", 2, ["end"], {"kind": "badCwd", "errno": 2, "stage": "chdir",
                                              "message": "/nonexistent"}),
    v("resize", "resize", 1, [], {"rows": 50, "cols": 132}),
    v("signal", "signal", 1, [], {"number": 15}),
    v("kill", "kill", 1, [], {}),
    v("ack", "ack", 1, [], {"bytes": 131072}),
    # session requests
    v("listSessions", "listSessions", 5, ["start"], {}),
    v("sessionList", "sessionList", 5, ["end"], {"sessions": [
        {"session": 5, "pid": 77, "argv": ["sleep", "9"], "tty": False, "detached": True, "attached": False,
         "startedNs": 1700000000000000000},
        {"session": 6, "pid": 78, "argv": [], "tty": True, "detached": False, "attached": True, "startedNs": 1,
         "exited": {"signal": 15, "coreDumped": False}}]}),
    v("sessionList-empty", "sessionList", 5, ["end"], {"sessions": []}),
    v("attach", "attach", 6, ["start"], {"session": 5, "replay": False}),
    v("attached", "attached", 6, [], {"session": 5, "pid": 77, "tty": True, "droppedBytes": 1024}),
    v("detach", "detach", 1, [], {}),
    v("detached", "detached", 1, ["end"], {"session": 5}),
    # relay requests
    v("logs-follow", "logs", 7, ["start"], {"session": 12, "follow": True}),
    v("logs-all", "logs", 7, ["start"], {"follow": False}),
    v("signalSession", "signalSession", 8, ["start"], {"session": 12, "number": 9}),
    # background processes
    v("processStart-full", "processStart", 10, ["start"], {
        "name": "web",
        "exec": {"argv": ["httpd", "-f", "-p", "8080"], "stdin": "none", "killGraceMs": 2000, "drainMs": 250,
                 "detach": True},
        "ready": {"ports": [8080], "http": [{"host": "127.0.0.1", "port": 8080, "path": "/health"}],
                  "logs": ["listening on [0-9]+"], "files": ["/run/web.pid"], "execs": [["/bin/sh", "-c", "true"]]},
        "waitTimeoutMs": 2000, "logBytes": 4194304, "restart": {"maxRestarts": 2}}),
    v("processStart-minimal", "processStart", 11, ["start"], {
        "name": "sleeper",
        "exec": {"argv": ["sleep", "100"], "stdin": "none", "killGraceMs": 2000, "drainMs": 250, "detach": True},
        "waitTimeoutMs": 60000, "logBytes": 4194304}),
    v("processReady", "processReady", 10, ["end"], {"process": {
        "name": "web", "session": 3, "pid": 77, "state": "ready", "argv": ["httpd", "-f", "-p", "8080"],
        "restarts": 0, "startedNs": 1700000000000000000, "readyNs": 1700000000020000000,
        "logStart": 0, "logEnd": 120}}),
    v("processFailed-exitedBeforeReady", "processFailed", 10, ["end"], {
        "code": "processExitedBeforeReady", "message": "'web' exited with code 3 before it was ready",
        "condition": "port 8080", "elapsedMs": 12, "exited": {"code": 3, "coreDumped": False},
        "tail": b("626f6f6d0a"),
        "process": {"name": "web", "session": 3, "pid": 77, "state": "failed", "argv": ["sh"], "restarts": 0,
                    "startedNs": 1, "exited": {"code": 3, "coreDumped": False}, "logStart": 0, "logEnd": 5}}),
    v("processFailed-readyTimeout", "processFailed", 10, ["end"], {
        "code": "processReadyTimeout", "message": "'web' was not ready after 2001 ms: port 8080 did not hold",
        "condition": "port 8080", "elapsedMs": 2001, "tail": b(""),
        "process": {"name": "web", "session": 3, "pid": 77, "state": "running", "argv": ["sleep", "100"],
                    "restarts": 0, "startedNs": 1, "logStart": 0, "logEnd": 0}}),
    v("processList", "processList", 12, ["start"], {}),
    v("processList-one", "processList", 12, ["start"], {"name": "web"}),
    v("processTable", "processTable", 12, ["end"], {"processes": [
        {"name": "db", "session": 4, "pid": 80, "state": "killed", "argv": ["postgres"], "restarts": 2,
         "startedNs": 5, "exited": {"signal": 15, "coreDumped": False}, "logStart": 100, "logEnd": 4194404}]}),
    v("processLogs-from", "processLogs", 13, ["start"], {"name": "web", "from": 4096, "follow": True}),
    v("processLogs-tail", "processLogs", 13, ["start"], {"name": "web", "tail": 1024, "follow": False}),
    v("processLogPosition", "processLogPosition", 13, [], {"offset": 4096, "droppedBytes": 0}),
    v("processSignal", "processSignal", 14, ["start"], {"name": "web", "number": 15}),
    v("processWait", "processWait", 15, ["start"], {"name": "web"}),
    v("processEnded", "processEnded", 15, ["end"], {"process": {
        "name": "web", "session": 3, "pid": 77, "state": "exited", "argv": ["true"], "restarts": 0, "startedNs": 1,
        "exited": {"code": 0, "coreDumped": False}, "logStart": 0, "logEnd": 0}}),
    v("processRemove", "processRemove", 16, ["start"], {"name": "web"}),
    # files (fs/1)
    v("fsStat", "fsStat", 20, ["start"], {"path": "/etc/hostname"}),
    v("fsStat-relative-as-user-lstat", "fsStat", 21, ["start"],
      {"path": "hostname", "cwd": "/etc", "user": "app", "follow": False}),
    v("fsInfo-file", "fsInfo", 20, ["end"], {"type": "file", "size": 13, "mode": 420, "uid": 0, "gid": 0,
                                             "mtimeNs": 1700000000123456789, "atimeNs": 1700000000000000000,
                                             "ctimeNs": 1700000000123456789, "ino": 1234, "nlink": 1}),
    v("fsInfo-symlink", "fsInfo", 21, ["end"], {"type": "symlink", "size": 8, "mode": 511, "uid": 0, "gid": 0,
                                                "mtimeNs": 0, "atimeNs": 0, "ctimeNs": 0, "ino": 99, "nlink": 1,
                                                "target": "hostname"}),
    v("fsList", "fsList", 22, ["start"], {"path": "/var/log", "recursive": True, "limit": 1000,
                                          "cursor": b("0000000000000007000000000000000000030003617070")}),
    v("fsEntries", "fsEntries", 22, ["end"], {"entries": [
        {"name": "app", "type": "dir", "size": 4096, "mode": 493, "mtimeNs": 1700000000000000000},
        {"name": "app/out.log", "type": "file", "size": 5, "mode": 420, "mtimeNs": 1700000000000000000}],
        "nextCursor": b("00000000000000090000")}),
    v("fsMkdir", "fsMkdir", 23, ["start"], {"path": "/srv/app", "mode": 493, "parents": True}),
    v("fsRemove", "fsRemove", 24, ["start"], {"path": "/srv/old", "recursive": True}),
    v("fsRename", "fsRename", 25, ["start"], {"from": "/srv/a", "to": "/srv/b", "overwrite": True}),
    v("fsSetattr", "fsSetattr", 26, ["start"], {"path": "/srv/b", "mode": 384, "uid": 1000, "gid": 1000}),
    v("fsRead", "fsRead", 27, ["start"], {"path": "/var/log/app.log", "offset": 1024, "length": 4096}),
    v("fsWrite", "fsWrite", 28, ["start"], {"path": "/srv/app/config.json", "mode": 420, "parents": True,
                                            "sha256": b("ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356")}),
    v("fsArchive", "fsArchive", 29, ["start"], {"path": "/srv/app"}),
    v("fsExtract", "fsExtract", 30, ["start"], {"path": "/srv/copy", "owners": True}),
    v("fsWatch", "fsWatch", 31, ["start"], {"path": "/srv/app", "recursive": True, "exclude": ["node_modules"]}),
    v("fsEvents", "fsEvents", 31, [], {"events": [{"type": "create", "path": "src/main.swift"},
                                                  {"type": "moveFrom", "path": "a", "cookie": 7},
                                                  {"type": "moveTo", "path": "b", "cookie": 7},
                                                  {"type": "overflow", "path": ""}]}),
    v("fsDone-write", "fsDone", 28, ["end"], {"bytes": 3, "sha256": b("ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356")}),
    v("fsDone-empty", "fsDone", 23, ["end"], {}),
    v("fsError", "fsError", 32, ["end"], {"kind": "permissionDenied", "op": "open", "path": "/root/secret",
                                          "errno": 13, "message": "open /root/secret: Permission denied"}),
    # exposed ports: relay requests
    v("exposePort", "exposePort", 9, ["start"], {"guestPort": 8080, "hostPort": 18080, "hostAddr": "127.0.0.1", "name": "web"}),
    v("exposePort-unchecked", "exposePort", 9, ["start"], {"guestPort": 3000, "check": False},
      note="expose even though nothing listens on the guest port yet"),
    v("portExposed", "portExposed", 9, ["end"], {"port": {"guestPort": 8080, "hostAddr": "127.0.0.1", "hostPort": 18080,
                                                          "name": "web"}}),
    v("unexposePort", "unexposePort", 10, ["start"], {"guestPort": 8080}),
    v("listPorts", "listPorts", 11, ["start"], {}),
    v("portList", "portList", 11, ["end"], {"ports": [
        {"guestPort": 3000, "hostAddr": "::1", "hostPort": 3000, "listening": False,
         "problem": "portInUse: [::1]:3000 is in use on the host"},
        {"guestPort": 8080, "hostAddr": "127.0.0.1", "hostPort": 18080, "name": "web", "connections": 3, "refusals": 1,
         "lastRefusal": "connectionRefused: guest port 8080: tried 127.0.0.1:8080 (ECONNREFUSED)"}]}),
    # exposed ports: the preamble of a tunnel connection (its own socket, id 0)
    v("tunnelOpen", "tunnelOpen", 0, [], {"guestPort": 8080, "request": 7}),
    v("tunnelOpen-probe", "tunnelOpen", 0, [], {"guestPort": 8080, "request": 8, "probe": True}),
    v("tunnelOpened", "tunnelOpened", 0, [], {"address": "127.0.0.1:8080"}),
    v("tunnelOpened-probe", "tunnelOpened", 0, [], {"listeners": ["127.0.0.1:8080", "[::]:8080"]}),
]


def to_cbor(meaning):
    if isinstance(meaning, dict):
        if set(meaning) == {"$bytes"}:
            return bytes.fromhex(meaning["$bytes"])
        return {to_cbor_key(k): to_cbor(x) for k, x in meaning.items()}
    if isinstance(meaning, list):
        return [to_cbor(x) for x in meaning]
    return meaning


def to_cbor_key(key):
    # JSON object keys are text, so a byte-string key is spelled "$bytes:HEX".
    if key.startswith("$bytes:"):
        return bytes.fromhex(key[len("$bytes:"):])
    return key


def encode(frame):
    kind = KINDS[frame["kind"]]
    flags = 0
    for name in frame["flags"]:
        flags |= FLAGS[name]
    payload = bytes.fromhex(frame["data"]) if frame["kind"] in DATA else cbor2.dumps(to_cbor(frame["payload"]))
    return struct.pack(">IIBB", len(payload) + 6, frame["id"], flags, kind) + payload


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    by_kind = {}
    for vector in VECTORS:
        by_kind.setdefault(vector["frame"]["kind"], []).append(vector)
    missing = set(KINDS) - set(by_kind)
    if missing:
        raise SystemExit("no vector for %s" % ", ".join(sorted(missing)))
    for name in os.listdir(here):
        if name.endswith(".json"):
            os.remove(os.path.join(here, name))
    for kind, vectors in by_kind.items():
        entries = []
        for vector in vectors:
            entry = {"name": vector["name"]}
            if "note" in vector:
                entry["note"] = vector["note"]
            entry["hex"] = encode(vector["frame"]).hex()
            entry["frame"] = vector["frame"]
            entries.append(entry)
        document = {"kind": kind, "code": KINDS[kind], "vectors": entries}
        with open(os.path.join(here, kind + ".json"), "w") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
    print("wrote %d vectors in %d files" % (len(VECTORS), len(by_kind)))


if __name__ == "__main__":
    main()
