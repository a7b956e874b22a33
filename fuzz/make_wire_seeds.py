#!/usr/bin/env python3
"""Writes fuzz/seeds/wire_decode/: valid command frames of every type, in JSON and in
MessagePack, so that wire_decode starts deep in the command decoders instead of having to
find `{"id":1,"subscribe":{...}}` byte by byte. Run from anywhere; it rewrites the seeds it
owns (json_cmd_*, msgpack_cmd_*) and leaves the others alone. No third-party module: the
few MessagePack types needed are encoded here."""

import json
import os
import struct

SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "wire_decode")

POS = {"epoch": "ab12", "offset": 41}
COMMANDS = {
    "connect": [
        {"id": 1, "connect": {}},
        {"id": 1, "connect": {"token": "eyJhbGciOiJIUzI1NiJ9.e30.sig", "name": "js", "version": 1,
                              "subs": {"chat:a": {"since": POS, "recover": True},
                                       "priv:b": {"token": "t", "join_leave": False}}}},
    ],
    "subscribe": [
        {"id": 2, "subscribe": {"channel": "chat:a"}},
        {"id": 2, "subscribe": {"channel": "hist:a", "token": "t", "since": POS, "recover": True,
                                "join_leave": True}},
    ],
    "unsubscribe": [{"id": 3, "unsubscribe": {"channel": "chat:a"}}],
    "publish": [
        {"id": 4, "publish": {"channel": "chat:a", "data": {"text": "hi", "n": [1, 2.5, None]}}},
        {"id": 4, "publish": {"channel": "chat:a", "data": "AAH+/w==", "binary": True,
                              "idempotency_key": "k1"}},
    ],
    "presence": [{"id": 5, "presence": {"channel": "chat:a"}}],
    "history": [
        {"id": 6, "history": {"channel": "hist:a"}},
        {"id": 6, "history": {"channel": "hist:a", "limit": 10, "since": POS, "reverse": True}},
    ],
    "refresh": [{"id": 7, "refresh": {"token": "t"}}],
    "sub_refresh": [{"id": 8, "sub_refresh": {"channel": "priv:a", "token": "t"}}],
    "ping": [{"id": 9, "ping": {}}],
}


def msgpack(v):
    """MessagePack of a JSON-like value; `bytes` become bin."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        assert 0 <= v < 2**32
        return bytes([v]) if v < 128 else b"\xce" + struct.pack(">I", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        return (bytes([0xA0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b
    if isinstance(v, bytes):
        return b"\xc4" + bytes([len(v)]) + v
    if isinstance(v, list):
        assert len(v) < 16
        return bytes([0x90 | len(v)]) + b"".join(msgpack(x) for x in v)
    if isinstance(v, dict):
        assert len(v) < 16
        return bytes([0x80 | len(v)]) + b"".join(msgpack(k) + msgpack(x) for k, x in v.items())
    raise TypeError(v)


def for_msgpack(command):
    """In MessagePack a publication's data is bin: its JSON text, or the bytes themselves."""
    command = json.loads(json.dumps(command))
    publish = command.get("publish")
    if publish is not None:
        if publish.get("binary"):
            publish["data"] = b"\x00\x01\xfe\xff"
        else:
            publish["data"] = json.dumps(publish["data"], separators=(",", ":")).encode()
    return command


def write(name, data):
    with open(os.path.join(SEEDS, name), "wb") as f:
        f.write(data)


def main():
    os.makedirs(SEEDS, exist_ok=True)
    every = []
    for kind, commands in COMMANDS.items():
        for i, command in enumerate(commands):
            every.append(command)
            write(f"json_cmd_{kind}_{i}", json.dumps(command, separators=(",", ":")).encode())
            write(f"msgpack_cmd_{kind}_{i}", msgpack([for_msgpack(command)]))
    # One batch of everything, as a client sends after a reconnect.
    write("json_cmd_batch", "\n".join(json.dumps(c, separators=(",", ":")) for c in every).encode())
    write("msgpack_cmd_batch", b"\xdc" + struct.pack(">H", len(every)) + b"".join(msgpack(for_msgpack(c)) for c in every))


if __name__ == "__main__":
    main()
