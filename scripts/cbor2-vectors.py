#!/usr/bin/env python3
"""CBOR interop with an implementation nobody on this project wrote (Python's cbor2).

  cbor2-vectors.py write FILE   encode edge cases and one payload of every message kind with
                                cbor2 and write them as `name<TAB>hex<TAB>diagnostic` lines;
                                the Swift tests decode them and compare diagnostics.
  cbor2-vectors.py check        read `name<TAB>hex<TAB>diagnostic` lines that Swift encoded on
                                stdin, decode each with cbor2, and print `name<TAB>ok` or
                                `name<TAB>MISMATCH<TAB>what cbor2 saw`.

The diagnostic notation (a subset of RFC 8949 section 8) is produced here from the Python value,
and in Swift by CBORValue.description, independently.
"""
import importlib.metadata
import sys
import cbor2


def diag(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if v is cbor2.undefined:
        return "undefined"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (bytes, bytearray)):
        return "h'" + v.hex() + "'"
    if isinstance(v, str):
        out = []
        for ch in v:
            cp = ord(ch)
            if ch in '"\\':
                out.append("\\" + ch)
            elif cp < 0x20 or cp >= 0x7F:
                out.append("\\u{%X}" % cp)
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(v, list):
        return "[" + ", ".join(diag(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(diag(k) + ": " + diag(x) for k, x in v.items()) + "}"
    if isinstance(v, cbor2.CBORTag):
        return "%d(%s)" % (v.tag, diag(v.value))
    raise TypeError("no diagnostic for %r" % (v,))


LONG = "tether " * 1000  # 7000 bytes: a two-byte length

EDGE = [
    ("uint-0", 0), ("uint-23", 23), ("uint-24", 24), ("uint-255", 255), ("uint-256", 256),
    ("uint-65535", 65535), ("uint-65536", 65536), ("uint-2^32-1", 2**32 - 1), ("uint-2^32", 2**32),
    ("uint-2^64-1", 2**64 - 1),
    ("nint-1", -1), ("nint-24", -24), ("nint-25", -25), ("nint-256", -256), ("nint-257", -257),
    ("nint-2^32", -(2**32)), ("nint-2^63", -(2**63)), ("nint-2^64", -(2**64)),
    ("text-empty", ""), ("text-a", "a"), ("text-unicode", "\u00fc\u6c34\U00010151"), ("text-quote", 'say "hi"\\n'),
    ("text-long", LONG), ("bytes-empty", b""), ("bytes-4", b"\x00\x01\xfe\xff"), ("bytes-long", bytes(range(256)) * 300),
    ("array-empty", []), ("array-mixed", [1, "two", b"\x03", [4, [5]], None, True, False]),
    ("array-long", list(range(1000))),
    ("map-empty", {}), ("map-nested", {"a": {"b": {"c": {"d": [1, {"e": "f"}]}}}, "z": -1}),
    ("map-int-keys", {1: "one", -2: "minus two"}),
    ("float-1.5", 1.5), ("float-neg", -4.1), ("float-big", 1.0e300), ("float-inf", float("inf")),
    ("tag-private", cbor2.CBORTag(4711, [1363896240, "x"])),  # a tag cbor2 leaves undecoded
    ("undefined", cbor2.undefined),
]

# One payload of every message kind (Sources/Protocol/Frame.swift) (data kinds carry raw bytes, not CBOR).
MESSAGES = [
    ("msg-hello", {"version": 1, "role": "agent", "name": "sandbox-1", "pid": 1,
                   "capabilities": ["pty", "exec"], "agentVersion": "0.1.0",
                   "bootNs": 123456789, "readyNs": 234567890}),
    ("msg-hello-minimal", {"version": 1, "role": "client"}),
    ("msg-error", {"code": "badPayload", "message": "key 'argv' is missing", "errno": 22}),
    ("msg-ping", {"nonce": 2**64 - 1}),
    ("msg-pong", {"nonce": 7}),
    ("msg-shutdown", {"graceMs": 5000}),
    ("msg-shutdown-empty", {}),
    ("msg-exec", {"argv": ["/bin/sh", "-c", "echo hi"], "env": {"A": "1", "LANG": "C.UTF-8"},
                  "cwd": "/tmp", "user": "sandbox:sandbox", "tty": {"rows": 24, "cols": 80},
                  "stdin": "pipe", "timeoutMs": 10000, "killGraceMs": 500, "drainMs": 100,
                  "rlimits": {"nofile": [1024, 4096], "core": [0, None]}, "detach": True, "seccomp": "restricted",
                  "someFutureKey": {"ignored": [1, 2, 3]}}),
    ("msg-exec-minimal", {"argv": ["true"]}),
    ("msg-exec-bytes-arg", {"argv": ["ls", b"caf\xe9"]}),
    ("msg-started", {"pid": 4242}),
    ("msg-stdinError", {"errno": 32, "message": "Broken pipe"}),
    ("msg-exited-code", {"code": 3, "coreDumped": False}),
    ("msg-exited-signal", {"signal": 9, "coreDumped": True}),
    ("msg-done", {}),
    ("msg-failed", {"kind": "notFound", "errno": 2, "stage": "exec", "message": "no such file"}),
    ("msg-resize", {"rows": 50, "cols": 132}),
    ("msg-signal", {"number": 15}),
    ("msg-kill", {}),
    ("msg-ack", {"bytes": 131072}),
    ("msg-listSessions", {}),
    ("msg-sessionList", {"sessions": [{"session": 5, "pid": 77, "argv": ["sleep", "9"], "tty": False,
                                       "detached": True, "attached": False, "startedNs": 1700000000000000000}]}),
    ("msg-attach", {"session": 5, "replay": False}),
    ("msg-attached", {"session": 5, "pid": 77, "tty": True, "droppedBytes": 1024}),
    ("msg-detach", {}),
    ("msg-detached", {"session": 5}),
    ("msg-logs", {"session": 12, "follow": True}),
    ("msg-logs-empty", {}),
    ("msg-signalSession", {"session": 12, "number": 9}),
    ("msg-processStart", {"name": "web", "exec": {"argv": ["httpd"], "detach": True},
                          "ready": {"ports": [8080], "logs": ["ready"]}, "waitTimeoutMs": 2000,
                          "restart": {"maxRestarts": 2}}),
    ("msg-processReady", {"process": {"name": "web", "session": 3, "pid": 77, "state": "ready", "argv": ["httpd"],
                                      "startedNs": 1, "readyNs": 2, "logEnd": 5}}),
    ("msg-processFailed", {"code": "processExitedBeforeReady", "message": "exited", "elapsedMs": 12,
                           "exited": {"code": 3}, "tail": b"boom",
                           "process": {"name": "web", "session": 3, "pid": 77, "state": "failed", "startedNs": 1,
                                       "exited": {"code": 3}}}),
    ("msg-processList", {"name": "web"}),
    ("msg-processTable", {"processes": []}),
    ("msg-processLogs", {"name": "web", "from": 4096, "follow": True}),
    ("msg-processLogPosition", {"offset": 4096, "droppedBytes": 17}),
    ("msg-processSignal", {"name": "web", "number": 15}),
    ("msg-processWait", {"name": "web"}),
    ("msg-processEnded", {"process": {"name": "web", "session": 3, "pid": 77, "state": "exited", "startedNs": 1,
                                      "exited": {"code": 0}}}),
    ("msg-processRemove", {"name": "web"}),
    ("msg-fsStat", {"path": "/etc/hostname", "follow": False}),
    ("msg-fsInfo", {"type": "symlink", "size": 8, "mode": 511, "uid": 0, "gid": 0, "mtimeNs": 5, "atimeNs": 6,
                    "ctimeNs": 7, "ino": 99, "nlink": 1, "target": "hostname"}),
    ("msg-fsList", {"path": "/var", "recursive": True, "limit": 10, "cursor": b"\x00\x01"}),
    ("msg-fsEntries", {"entries": [{"name": b"caf\xe9", "type": "file", "size": 5, "mode": 420, "mtimeNs": 1}]}),
    ("msg-fsMkdir", {"path": "/srv/app", "mode": 448, "parents": True}),
    ("msg-fsRemove", {"path": "/srv/old", "recursive": True}),
    ("msg-fsRename", {"from": "a", "to": "b", "cwd": "/srv", "overwrite": True}),
    ("msg-fsSetattr", {"path": "/srv/b", "mode": 384, "uid": 1000}),
    ("msg-fsRead", {"path": "/var/log/app.log", "user": "app", "offset": 1024, "length": 4096, "limit": 1 << 40}),
    ("msg-fsWrite", {"path": "/srv/x", "mode": 420, "uid": 1, "gid": 2, "ifAbsent": True, "sha256": bytes(32)}),
    ("msg-fsArchive", {"path": "/srv/app"}),
    ("msg-fsExtract", {"path": "/srv/copy", "owners": True}),
    ("msg-fsWatch", {"path": "/srv/app", "recursive": True, "exclude": [".git"]}),
    ("msg-fsEvents", {"events": [{"type": "moveTo", "path": "b", "cookie": 7}, {"type": "overflow", "path": ""}]}),
    ("msg-fsDone", {"bytes": 3, "sha256": bytes(32)}),
    ("msg-fsError", {"kind": "noSpace", "op": "write", "path": "/full/x", "errno": 28, "message": "no space"}),
    ("msg-exposePort", {"guestPort": 8080, "hostPort": 18080, "hostAddr": "::1", "name": "web", "check": False}),
    ("msg-portExposed", {"port": {"guestPort": 8080, "hostAddr": "127.0.0.1", "hostPort": 18080}}),
    ("msg-unexposePort", {"guestPort": 8080}),
    ("msg-listPorts", {}),
    ("msg-portList", {"ports": [{"guestPort": 3000, "hostAddr": "::1", "hostPort": 3000, "listening": False,
                                 "problem": "portInUse", "connections": 2, "refusals": 1, "lastRefusal": "x"}]}),
    ("msg-tunnelOpen", {"guestPort": 8080, "request": 2**64 - 1, "probe": True}),
    ("msg-tunnelOpened", {"address": "127.0.0.1:8080", "listeners": ["[::]:8080"]}),
]


def write(path):
    with open(path, "w") as f:
        f.write("# Generated by scripts/cbor2-vectors.py with cbor2 %s; do not edit.\n" % importlib.metadata.version("cbor2"))
        for name, value in EDGE + MESSAGES:
            f.write("%s\t%s\t%s\n" % (name, cbor2.dumps(value).hex(), diag(value)))


def check():
    failures = 0
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        name, hexdata, expected = line.split("\t", 2)
        try:
            got = diag(cbor2.loads(bytes.fromhex(hexdata)))
        except Exception as e:  # a decode failure is a mismatch, reported, not a crash
            got = "error: %s" % e
        if got == expected:
            print("%s\tok" % name)
        else:
            failures += 1
            print("%s\tMISMATCH\t%s" % (name, got))
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    elif len(sys.argv) == 2 and sys.argv[1] == "check":
        sys.exit(check())
    else:
        sys.exit(__doc__)
