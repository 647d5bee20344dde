#!/usr/bin/env python3
"""Writes the seed corpus of the protocol fuzzer: every cbor2 vector as a bare CBOR input and
wrapped in a frame of its message kind, plus a few stream shapes (several frames, data frames,
bad lengths). Each seed starts with the read-size byte the fuzz target uses to split the stream.

  fuzz-seeds.py VECTORS_FILE OUT_DIR
"""
import hashlib
import os
import struct
import sys

KINDS = {"hello": 0x01, "error": 0x02, "ping": 0x03, "pong": 0x04, "shutdown": 0x05, "exec": 0x10,
         "started": 0x11, "stdinError": 0x15, "exited": 0x16, "done": 0x17, "failed": 0x18, "resize": 0x19,
         "signal": 0x1A, "kill": 0x1B, "ack": 0x1C, "listSessions": 0x20, "sessionList": 0x21,
         "attach": 0x22, "attached": 0x23, "detach": 0x24, "detached": 0x25}


def frame(session, flags, kind, payload):
    return struct.pack(">IIBB", len(payload) + 6, session, flags, kind) + payload


def main(vectors, out):
    os.makedirs(out, exist_ok=True)
    seeds = []
    for line in open(vectors):
        if line.startswith("#"):
            continue
        name, hexdata, _ = line.rstrip("\n").split("\t", 2)
        payload = bytes.fromhex(hexdata)
        if len(payload) > 4096:
            continue
        seeds.append(b"\x00" + payload)
        if name.startswith("msg-"):
            kind = name[4:].split("-")[0]
            seeds.append(b"\x03" + frame(1, 2, KINDS[kind], payload))
    seeds.append(b"\x01" + frame(7, 0, 0x12, b"hello\n") + frame(7, 0, 0x13, b"err") + frame(7, 1, 0x14, b""))
    seeds.append(b"\x00" + struct.pack(">I", 5) + b"\x00" * 5)
    seeds.append(b"\x00" + struct.pack(">I", (1 << 20) + 7))
    for seed in seeds:
        with open(os.path.join(out, hashlib.sha1(seed).hexdigest()), "wb") as f:
            f.write(seed)
    print("%d seeds in %s" % (len(seeds), out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
