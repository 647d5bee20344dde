#!/usr/bin/env python3
"""Writes the committed seed corpora of the fuzz targets (see scripts/fuzz.sh):

  protocol  every cbor2 vector as a bare CBOR input and wrapped in a frame of its message kind,
            plus stream shapes (several frames, data frames, bad lengths); first byte = read size
  frame     the framed seeds of `protocol` (first byte = read size)
  cbor      every cbor2 vector, bare
  messages  every msg-* vector, prefixed with the index of its type in fuzz/targets/messages.swift
  files     every msg-fs* vector, prefixed with the index of its type in fuzz/targets/files.swift,
            and tar streams (prefix: the tar index, then the piece-size byte)
  agent     host-to-agent streams (after the harness's hello): exec of /bin/true, cat with stdin,
            a pty, failures, control frames, garbage, files requests (under /tmp: the target
            runs as nobody)
  relay     [u16 BE length of agent bytes][agent-to-relay bytes][client-to-relay bytes]

  /usr/bin/python3 scripts/fuzz-seeds.py VECTORS_FILE FUZZ_DIR (python3-cbor2)     (usually: Tests/ProtocolTests/Vectors/cbor2-vectors.txt fuzz)
"""
import hashlib
import os
import shutil
import struct
import sys

import cbor2

KINDS = {"hello": 0x01, "error": 0x02, "ping": 0x03, "pong": 0x04, "shutdown": 0x05, "exec": 0x10,
         "started": 0x11, "stdinError": 0x15, "exited": 0x16, "done": 0x17, "failed": 0x18, "resize": 0x19,
         "signal": 0x1A, "kill": 0x1B, "ack": 0x1C, "listSessions": 0x20, "sessionList": 0x21,
         "attach": 0x22, "attached": 0x23, "detach": 0x24, "detached": 0x25,
         "processStart": 0x50, "processReady": 0x51, "processFailed": 0x52, "processList": 0x53,
         "processTable": 0x54, "processLogs": 0x55, "processLogPosition": 0x56, "processSignal": 0x57,
         "processWait": 0x58, "processEnded": 0x59, "processRemove": 0x5A,
         "fsStat": 0x30, "fsInfo": 0x31, "fsList": 0x32, "fsEntries": 0x33, "fsMkdir": 0x34, "fsRemove": 0x35,
         "fsRename": 0x36, "fsSetattr": 0x37, "fsRead": 0x38, "fsWrite": 0x39, "fsArchive": 0x3A, "fsExtract": 0x3B,
         "fsWatch": 0x3C, "fsEvents": 0x3D, "fsDone": 0x3E, "fsError": 0x3F,
         "exposePort": 0x40, "portExposed": 0x41, "unexposePort": 0x42, "listPorts": 0x43, "portList": 0x44,
         "tunnelOpen": 0x45, "tunnelOpened": 0x46}

# The order of `messageChecks` in fuzz/targets/files.swift (the tar reader is the index after them).
FILE_ORDER = ["fsStat", "fsInfo", "fsList", "fsEntries", "fsMkdir", "fsRemove", "fsRename", "fsSetattr", "fsRead",
              "fsWrite", "fsArchive", "fsExtract", "fsWatch", "fsEvents", "fsDone", "fsError"]
# The order of `checks` in fuzz/targets/messages.swift.
MESSAGE_ORDER = ["hello", "error", "ping", "pong", "shutdown", "exec", "started", "stdinError", "exited",
                 "done", "failed", "resize", "signal", "kill", "ack", "listSessions", "sessionList", "attach",
                 "attached", "detach", "detached", "logs", "signalSession", "exposePort", "portExposed",
                 "unexposePort", "listPorts", "portList", "tunnelOpen", "tunnelOpened",
                 "processStart", "processReady", "processFailed", "processList", "processTable", "processLogs",
                 "processLogPosition", "processSignal", "processWait", "processEnded", "processRemove"]
START, END = 2, 1


def frame(session, flags, kind, payload):
    if isinstance(kind, str):
        kind = KINDS[kind]
    if not isinstance(payload, (bytes, bytearray)):
        payload = cbor2.dumps(payload)
    return struct.pack(">IIBB", len(payload) + 6, session, flags, kind) + payload


def write(out, seeds):
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    for seed in seeds:
        with open(os.path.join(out, hashlib.sha1(seed).hexdigest()), "wb") as f:
            f.write(seed)
    print("%d seeds in %s" % (len(seeds), out))


def exec_frame(session, argv, **keys):
    keys["argv"] = argv
    return frame(session, START, "exec", keys)


def process_start(session, name, argv, **keys):
    keys["name"] = name
    keys["exec"] = {"argv": argv}
    return frame(session, START, "processStart", keys)


def process_streams():
    """Background processes: start with every readiness condition, logs read and followed, signals,
    waits and removals, and the refusals (bad names, bad expressions, a name in use)."""
    named = lambda kind, session, **keys: frame(session, START, kind, keys)
    return [
        process_start(1, "echo", ["/bin/echo", "ready"], ready={"logs": ["^rea[d]y$"]}) + named("processList", 2)
        + named("processLogs", 3, name="echo", follow=True) + frame(3, 0, "ack", {"bytes": 4096}) + frame(3, 0, "kill", {}),
        process_start(1, "web", ["/bin/sleep", "5"], ready={"ports": [1], "files": ["/"], "http": [{"port": 1}],
                                                         "execs": [["/bin/true"]]}, waitTimeoutMs=5)
        + named("processSignal", 2, name="web", number=15) + named("processWait", 3, name="web"),
        process_start(1, "flaky", ["/bin/sh", "-c", "echo x; exit 1"], restart={"maxRestarts": 1})
        + named("processWait", 2, name="flaky") + named("processRemove", 3, name="flaky")
        + named("processLogs", 4, name="flaky", tail=1),
        process_start(1, "a", ["/bin/true"]) + process_start(2, "a", ["/bin/true"]) + named("processLogs", 3, name="a", **{"from": 99}),
        process_start(1, "-bad", ["/bin/true"]) + process_start(2, "r", ["/bin/true"], ready={"logs": ["("]}),
        process_start(1, "big", ["/bin/true"], logBytes=1) + process_start(2, "t", ["/bin/true"], tty={"rows": 1, "cols": 1}),
        process_start(1, "gone", ["/nonexistent"]) + named("processRemove", 2, name="nobody")
        + named("processSignal", 3, name="nobody", number=99),
        frame(1, START, "processLogs", {"name": "x", "from": 1, "tail": 1}) + frame(2, START, "processStart", b"\xa0"),
    ]


def agent_streams():
    hello = frame(0, 0, "hello", {"version": 1, "role": "client", "name": "seed", "pid": 1, "capabilities": []})
    true = exec_frame(1, ["/bin/true"])
    return [
        true,
        exec_frame(1, ["/bin/echo", "hi"]) + frame(1, 0, "ack", {"bytes": 65536}),
        exec_frame(1, ["/bin/cat"], stdin="pipe") + frame(1, 0, 0x14, b"data\n") + frame(1, END, 0x14, b""),
        exec_frame(1, ["/bin/sh", "-c", "exit 3"], env={"A": "b"}, cwd="/", timeoutMs=1000, killGraceMs=10),
        exec_frame(1, ["/bin/true"], tty={"rows": 24, "cols": 80}) + frame(1, 0, "resize", {"rows": 30, "cols": 100}),
        exec_frame(1, ["/nonexistent"]),
        exec_frame(1, ["/bin/true"], cwd="/nonexistent"),
        exec_frame(1, ["/bin/true"], rlimits={"nofile": [64, 64], "bogus": [1, 1]}),
        exec_frame(1, ["/bin/true"], user="nobody"),
        exec_frame(1, []),
        exec_frame(1, ["/bin/sleep", "5"]) + frame(1, 0, "signal", {"number": 15}) + frame(1, 0, "kill", {}),
        exec_frame(1, ["/bin/true"], detach=True) + frame(0, 0, "listSessions", {}),
        true + exec_frame(2, ["/bin/true"]) + exec_frame(1, ["/bin/true"]),
        frame(0, 0, "ping", {"nonce": 7}) + frame(0, 0, "listSessions", {}),
        frame(0, 0, "attach", {"session": 1}) + frame(0, 0, "detach", {"session": 1}),
        frame(5, 0, 0x14, b"x") + frame(5, 0, "kill", {}) + frame(5, 0, 0x7F, b"?"),
        frame(1, START, 0x7E, {}) + frame(1, START, "exec", b"\xff\x00"),
        hello,
        frame(0, 0, "shutdown", {"graceMs": 0}),
        struct.pack(">I", 5) + b"\x00" * 5,
        struct.pack(">I", (1 << 20) + 7),
    ] + process_streams() + agent_file_streams()


def tar_header(name, typeflag, size=0, link=b"", mode=0o644):
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"%07o\0" % 0
    h[116:124] = b"%07o\0" % 0
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % 0
    h[156] = ord(typeflag)
    h[157:157 + len(link)] = link
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def tar_streams():
    pad = lambda n: b"\0" * ((512 - n % 512) % 512)
    pax = b"30 path=" + b"p" * 20 + b"/long\n"
    return [
        tar_header(b"dir/", "5") + tar_header(b"dir/f", "0", 5) + b"hello" + pad(5) + b"\0" * 1024,
        tar_header(b"link", "2", link=b"dir/f") + b"\0" * 1024,
        tar_header(b"././@PaxHeader", "x", len(pax)) + pax + pad(len(pax)) + tar_header(b"short", "0", 1) + b"x" + pad(1),
        tar_header(b"cut", "0", 1000) + b"partial",
        tar_header(b"dev", "3") + tar_header(b"../escape", "0", 1) + b"y" + pad(1),
    ]


def agent_file_streams():
    scope = {"path": "/tmp/fuzz-agent-seed"}
    return [
        frame(1, START, "fsStat", {"path": "/"}) + frame(2, START, "fsStat", {"path": "tmp", "cwd": "/", "follow": False}),
        frame(1, START, "fsList", {"path": "/etc", "limit": 3}) + frame(2, START, "fsList", {"path": "/tmp", "recursive": True,
                                                                                       "limit": 5, "cursor": b"\0" * 10}),
        frame(1, START, "fsMkdir", dict(scope, mode=0o700, parents=True)) + frame(2, START, "fsRemove", dict(scope, recursive=True)),
        frame(1, START, "fsWrite", dict(scope, parents=True)) + frame(1, 0, 0x14, b"seed\n") + frame(1, END, 0x14, b"")
        + frame(2, START, "fsRead", scope) + frame(2, 0, "ack", {"bytes": 65536}),
        frame(1, START, "fsWrite", dict(scope, sha256=b"\0" * 32)) + frame(1, END, 0x14, b"x"),
        frame(1, START, "fsWrite", scope) + frame(1, 0, 0x14, b"half") + frame(1, 0, "kill", {}),
        frame(1, START, "fsRename", {"from": "/tmp/fuzz-agent-seed", "to": "/tmp/fuzz-agent-seed2"}),
        frame(1, START, "fsSetattr", dict(scope, mode=0o600)) + frame(2, START, "fsStat", {"path": b"/tmp/\0x"}),
        frame(1, START, "fsWatch", {"path": "/tmp", "recursive": False}) + frame(1, 0, "kill", {}),
        frame(1, START, "fsArchive", {"path": "/etc/ssl"}) + frame(1, 0, "ack", {"bytes": 1 << 20}),
        frame(1, START, "fsExtract", {"path": "/tmp/fuzz-agent-seed-x"}) + frame(1, END, 0x14, tar_streams()[0]),
        frame(1, START, "fsRead", {"path": "/etc/hostname", "user": "65534"}),
    ]


def relay_streams():
    client_hello = frame(0, 0, "hello", {"version": 1, "role": "client", "name": "seed", "pid": 1, "capabilities": []})
    agent_run = (frame(1, 0, "started", {"pid": 42}) + frame(1, 0, 0x12, b"out\n") + frame(1, 0, 0x13, b"err")
                 + frame(1, 0, "exited", {"code": 0, "coreDumped": False}) + frame(1, END, "done", {}))
    pairs = [
        (b"", client_hello + exec_frame(1, ["/bin/true"])),
        (agent_run, client_hello + exec_frame(1, ["/bin/echo", "hi"]) + frame(1, 0, "ack", {"bytes": 4096})),
        (frame(1, END, "failed", {"kind": "notFound", "errno": 2, "stage": "exec", "message": "x"}),
         client_hello + exec_frame(1, ["/nope"])),
        (frame(0, 0, "pong", {"nonce": 1}), client_hello + frame(0, 0, "ping", {"nonce": 9})),
        (frame(0, 0, "sessionList", {"sessions": []}), client_hello + frame(0, 0, "listSessions", {})),
        (b"", client_hello + exec_frame(3, ["/bin/cat"], stdin="pipe", detach=True) + frame(3, 0, 0x14, b"in")
         + frame(3, END, 0x14, b"") + frame(0, 0, "detach", {"session": 3})),
        (b"", client_hello + frame(0, 0, "attach", {"session": 1}) + frame(9, 0, "kill", {})),
        (frame(7, 0, 0x12, b"stray") + struct.pack(">I", 3), client_hello),
        (b"", struct.pack(">I", (1 << 20) + 7)),
        (frame(0, 0, "error", {"code": "internal", "message": "x"}), client_hello + frame(1, START, 0x7F, b"")),
        # Port requests the relay answers itself (the fuzzed relay has no tunnel endpoint).
        (b"", client_hello + frame(1, START, "listPorts", {}) + frame(2, START, "exposePort", {"guestPort": 8080})
         + frame(3, START, "unexposePort", {"guestPort": 70000})),
    ]
    return [struct.pack(">H", len(a)) + a + c for a, c in pairs]


def main(vectors, fuzz_dir):
    bare, framed, messages, files = [], [], [], []
    for line in open(vectors):
        if line.startswith("#"):
            continue
        name, hexdata, _ = line.rstrip("\n").split("\t", 2)
        payload = bytes.fromhex(hexdata)
        if len(payload) > 4096:
            continue
        bare.append(payload)
        if name.startswith("msg-"):
            kind = name[4:].split("-")[0]
            if kind in KINDS:
                framed.append(b"\x03" + frame(1, START, kind, payload))
            if kind in MESSAGE_ORDER:
                messages.append(bytes([MESSAGE_ORDER.index(kind)]) + payload)
            if kind in FILE_ORDER:
                files.append(bytes([FILE_ORDER.index(kind)]) + payload)
    files += [bytes([len(FILE_ORDER), piece]) + stream for stream in tar_streams() for piece in (0, 73)]
    framed.append(b"\x01" + frame(7, 0, 0x12, b"hello\n") + frame(7, 0, 0x13, b"err") + frame(7, END, 0x14, b""))
    framed.append(b"\x00" + struct.pack(">I", 5) + b"\x00" * 5)
    framed.append(b"\x00" + struct.pack(">I", (1 << 20) + 7))
    write(os.path.join(fuzz_dir, "corpus", "protocol"), [b"\x00" + b for b in bare] + framed)
    write(os.path.join(fuzz_dir, "corpus", "frame"), framed)
    write(os.path.join(fuzz_dir, "corpus", "cbor"), bare)
    write(os.path.join(fuzz_dir, "corpus", "messages"), messages)
    write(os.path.join(fuzz_dir, "corpus", "files"), files)
    write(os.path.join(fuzz_dir, "corpus", "agent"), agent_streams())
    write(os.path.join(fuzz_dir, "corpus", "relay"), relay_streams())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
