#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/<target>/ (committed; fuzz/corpus is not).

Lines come from the parser tests in src/record/parse/docker.rs and src/record/parse/cri.rs and from the
log files under examples/node. The checkpoint seed `real-checkpoint` was written by
`Checkpoints::save` (see README.md) and is kept as is; this script only adds variants.
Run from anywhere: python3 fuzz/make_seeds.py
"""
import glob
import gzip
import hashlib
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEEDS = os.path.join(HERE, "seeds")


def write(target, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def example_lines(pattern, limit=6):
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "node", pattern), recursive=True)):
        if path.endswith(".gz"):
            continue
        with open(path, "rb") as f:
            out += [l for l in f.read().split(b"\n") if l][:limit]
    return out


GARBAGE = [
    b"", b" ", b"garbage line without timestamp", b"{", b'{"log":"half a line wri',
    b"\xff\xfe\x00", b"2024-07-08T03:42:57Z", b"2024-07-08T03:42:57Z stdout",
    b'{"log":"x\\n","stream":"stdout","time":"yesterday"}', b'"just a string"', b"[1,2,3]",
]

DOCKER = [
    rb'{"log":"hello\n","stream":"stdout","time":"2024-07-08T03:42:57.123456789Z"}',
    rb'{"log":"\n","stream":"stderr","time":"2024-07-08T03:42:57Z"}',
    rb'{"log":"\u003cb\u003e \"q\" \\ \t\n","stream":"stdout","time":"2024-07-08T03:42:57.1Z"}',
    rb'{"log":"partial chunk","stream":"stdout","time":"2024-07-08T03:42:57.5Z"}',
    rb'{"log":"ends in backslash-n \\n","stream":"stdout","time":"2024-07-08T03:42:57Z"}',
    rb'{"log":"with attrs\n","stream":"stdout","attrs":{"tag":"x"},"time":"2024-07-08T03:42:57Z"}',
    rb'{"stream":"stderr","time":"2024-07-08T11:42:57+08:00","log":"reordered\n"}',
    rb'{ "log" : "spaces\n" , "stream" : "stdout" , "time" : "2024-07-08T03:42:57Z" }',
    '{"log":"Zoë ✓ 😀\\n","stream":"stdout","time":"2024-07-08T03:42:57Z"}'.encode(),
    rb'{"log":"\ud83d\ude00\n","stream":"stdout","time":"2024-07-08T03:42:57Z"}',
    rb'{"log":"a \"b\"\n","stream":"stdout","time":"2024-07-08T03:42:57Z"}',
    # rejected by the tests
    rb'{"log":"x\n","stream":"stdin","time":"2024-07-08T03:42:57Z"}',
    rb'{"log":"x\n","stream":"stdout"}',
    rb'{"stream":"stdout","time":"2024-07-08T03:42:57Z"}',
    rb'{"log":"x\n","stream":"stdout","time":"2024-07-08T03:42:57Z"} trailing',
    rb'{"log":"half a line wri{"log":"next\n","stream":"stdout","time":"2024-07-08T03:42:57Z"}',
    rb'{"log":"bad \q\n","stream":"stdout","time":"2024-07-08T03:42:57Z"}',
    rb'{"log":12,"stream":"stdout","time":"2024-07-08T03:42:57Z"}',
    b'{"log":"tab\tinside\\n","stream":"stdout","time":"2024-07-08T03:42:57Z"}',
]

CRI = [
    b"2024-07-08T03:42:57.123456789Z stdout F hello world",
    b"2024-07-08T03:42:57.123456789Z stderr P chunk",
    b"2024-07-08T03:42:57.123456789Z stdout F ",
    b"2024-07-08T03:42:57.123456789Z stdout F",
    b"2024-07-08T03:42:57.123456789Z stdout F  two  spaces ",
    b"2024-07-08T11:42:57.123456789+08:00 stdout F cri-o",
    b"2024-07-08T03:42:57.1-05:00 stdout F west",
    b"2024-07-08T03:42:57Z stdout F:x tagged",
    b"2024-07-08T03:42:57Z stdout F bad \xff utf8",
    b'2024-07-08T03:42:57Z stdout F {"json":true}',
    # rejected by the tests
    b"2024-07-08T03:42:57Z stdin F x",
    b"2024-07-08T03:42:57Z stdout X x",
    b"2024-07-08 03:42:57Z stdout F x",
    b"not-a-time stdout F x",
    b"2024-07-08T03:42:57Z  stdout F x",
]

TIMESTAMPS = [
    b"2024-07-08T03:42:57.123456789Z", b"2024-07-08T03:42:57.1Z", b"2024-07-08T03:42:57Z",
    b"2024-07-08t03:42:57.5z", b"2024-07-08T11:42:57.123456789+08:00", b"2024-07-08T01:00:00.5+08:00",
    b"2024-12-31T22:30:00-05:00", b"2024-07-08T03:42:57.000000001+00:00", b"2024-07-09T00:00:01Z",
    b"1970-01-01T00:00:01.5Z", b"2024-02-29T03:42:57Z", b"0000-01-01T00:00:00+01:00",
    b"9999-12-31T23:59:59.999999999-01:00",
    # rejected by the tests
    b"2024-07-08", b"2024-07-08T03:42:57", b"2024-07-08T03:42:57.Z", b"2024-07-08T03:42:57.1234567890Z",
    b"2024-13-08T03:42:57Z", b"2023-02-29T03:42:57Z", b"2024-07-08T24:00:00Z", b"2024-07-08T03:42:57+0800",
    b"2024-07-08 03:42:57Z", b"2024-07-08T03:42:57Zjunk", "２０２４-07-08T03:42:57Z".encode(),
]


def merge_ops(cap, ops):
    """ops: (stream 0/1, partial bool, chunk bytes) or 'reset' / 'flush'."""
    out = bytearray([cap])
    for op in ops:
        if op == "reset":
            out.append(62 << 2)
        elif op == "flush":
            out.append(63 << 2)
        else:
            s, p, chunk = op
            assert len(chunk) <= 61
            out.append(len(chunk) << 2 | (2 if p else 0) | s)
            out += chunk
    return bytes(out)


MERGE = [
    merge_ops(64, [(0, False, b"hello")]),
    merge_ops(64, [(0, True, b"ab")] * 20 + [(0, False, b"!")]),
    merge_ops(64, [(0, True, b"out1 "), (1, False, b"err"), (0, False, b"out2")]),
    merge_ops(5, [(0, True, b"abcd"), (0, True, b"efgh"), (0, False, b"ijkl"), (0, False, "abcdé".encode())]),
    merge_ops(64, [(0, True, "é".encode()[:1]), (0, False, "é".encode()[1:])]),
    merge_ops(64, [(1, True, b"e"), (0, True, b"o"), "flush", (0, False, b"after")]),
    merge_ops(7, [(0, True, "aé€😀".encode()), (1, True, "😀😀".encode()), (0, False, b"x"), "reset", (1, False, b"y")]),
    merge_ops(64, [(0, True, b"x" * 61), (0, True, b"y" * 10), (0, False, b"z")]),
]

CHECKPOINT_BODIES = [
    b'{"files":[]}',
    b'{"files":[{"id":"0e56c73051afed7e6f3ef13498c2ffe6","offset":4096,"last_time":"2024-07-08T03:42:57.5Z","path":"/var/log/pods/a/0.log"}]}',
    b'{"files":[{"id":"zz","offset":1,"path":"/x"}]}',
]


INDEX_DATE_FORMATS = [
    b"%Y.%m.%d\0logstash-2024.07.08",
    b"%Y.%m.%d.%H\0logs-2024.07.08.03",
    b"%G.%V\0w-2024.28",
    b"%Y%j\0d-2024190",
    b"%y-%m\0m-24-07",
    b"%Y.%m.%d%\0",
    b"%Q\0",
    b"UPPER-%Y\0",
]


def frame(payload, records, flags=0):
    head = b"SHB1" + bytes([flags]) + struct.pack("<II", records, len(payload))
    head += struct.pack("<I", zlib.crc32(head)) + struct.pack("<I", zlib.crc32(payload))
    return head + payload


NDJSON = b'{"create":{"_index":"l-2024.07.08","_id":"a"}}\n{"log":"x"}\n'

BUFFER_SEGMENTS = [
    frame(NDJSON, 1),
    frame(NDJSON, 1) + frame(NDJSON * 2, 2),
    frame(NDJSON, 1) + frame(NDJSON, 1)[:30],  # torn tail
    b"garbage before" + frame(NDJSON, 1),
    frame(b"\x1f\x8b not really gzip", 3, flags=1),
    frame(NDJSON, 1)[:-1] + b"X" + frame(NDJSON, 1),  # damaged payload, then a good frame
]


def bulk(sent, items, errors=True):
    body = b'{"errors":%s,"items":[%s]}' % (b"true" if errors else b"false", b",".join(items))
    return bytes([sent]) + body


def item(status, error=None):
    if error is None:
        return b'{"create":{"status":%d}}' % status
    return b'{"create":{"status":%d,"error":%s}}' % (status, error)


MAPPING = b'{"type":"mapper_parsing_exception","reason":"failed to parse field [status] of type [long]"}'

BULK_RESPONSES = [
    bulk(1, [item(201)], errors=False),
    bulk(3, [item(201), item(409), item(429, b'{"type":"es_rejected_execution_exception"}')]),
    bulk(2, [item(400, MAPPING), item(503, b'{"type":"unavailable_shards_exception"}')]),
    bulk(2, [item(201)]),  # fewer items than sent
    bytes([0]) + b'{"errors":false,"items":[]}',
    bytes([1]) + b"<html>502 Bad Gateway</html>",
    bytes([1]) + b'{"took":3,"errors":false,"items":[{"index":{"_index":"x","status":201}}]}',
]


JAVA = ("2024-07-08 03:42:57.123 ERROR 1 --- [exec-1] c.a.Orders : failed\n"
        "java.lang.IllegalStateException: bad\n\tat a.B.c(B.java:1)\nCaused by: x.Y: z\n\t... 3 more\n"
        "INFO next\n")
PYTHON = ("ERROR:root:failed\nTraceback (most recent call last):\n  File \"a.py\", line 1, in <module>\n"
          "    x()\nValueError: bad\n\nDuring handling of the above exception, another exception occurred:\n\n"
          "Traceback (most recent call last):\n  File \"a.py\", line 3\nRuntimeError: worse\nINFO:root:next\n")
GO = ("panic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/app/main.go:5 +0x1d\nexit status 2\n"
      "2024/07/08 next\n")
MIXED = "\x40stderr line\nstdout line\n\x4f\tat a.B.c(B.java:1)\n\x41    at x (y.js:1:2)\n"

MULTILINE = [bytes([sel]) + text.encode() for sel, text in
             [(1, JAVA), (2, JAVA), (3, PYTHON), (4, GO), (1, MIXED), (0, JAVA), (8, "PHP Fatal error:  x\nStack trace:\n#0 {main}\n")]]

FIELDS = [bytes([sel]) + text for sel, text in [
    (0, b'{"level":"error","msg":"boom","user_id":42,"http":{"status":500}}'),
    (2, b'{"log":"mine","@timestamp":"x","level":"info","a":[1,{"b":null}]}'),
    (4, b'{"level":"WARNING","msg":"m","ts":"2024-07-08T03:42:57Z"}'),
    (1, b'time=2024-07-08T03:42:57Z level=info msg="hello \\"x\\"" n=1'),
    (3, b'a=1 b=2 shipper=3'),
    (0, b'{"a":"\\ud83d\\ude00","b":1e400}'),
]]

# Byte 0: bit 0 keyed hash, bit 1 a user pattern; the rest is the text.
REDACTION = [
    b"\x00login user=bob password=hunter2 ok",
    b'\x01{"user":"bob","password":"correct horse","apiKey":"k"}',
    b"\x00Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc",
    b"\x00key AKIAIOSFODNN7EXAMPLE used",
    b"\x00card 4111 1111 1111 1111 and 378282246310005, not 4111111111111112",
    b"\x00-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- then -----BEGIN PRIVATE KEY-----\ncut",
    b"\x02user id=12345 and id=7 \xc3\xa9\x01\x1f",
    b"\x00GET /orders/42 200 in 3 ms 2024-07-08T03:42:57.123Z",
]


# Byte 0 `z`: the rest is wrapped as two gzip members split at byte 1; else raw file bytes.
CRI_ROTATED = "".join(f"2024-07-08T03:42:57.{i:09d}Z stdout F line {i}\n" for i in range(40)).encode()
GZIP_ROTATIONS = [
    b"z\x20" + CRI_ROTATED,
    b"z\x00",
    gzip.compress(CRI_ROTATED, mtime=0),
    gzip.compress(CRI_ROTATED, mtime=0)[:-9],
    gzip.compress(b"a\n", mtime=0) + gzip.compress(b"b\n", mtime=0),
    b"not gzip at all\n",
]


def main():
    for line in GARBAGE + DOCKER + example_lines("**/*-json.log*") + example_lines("pods/shop_*/nginx/0.log"):
        write("docker_parse", line)
    for line in GARBAGE + CRI + example_lines("pods/*_*-*/*/0.log*"):
        write("cri_parse", line)
    for ts in TIMESTAMPS:
        write("timestamp_parse", ts)
    for ops in MERGE:
        write("partial_merge", ops)
    for body in CHECKPOINT_BODIES:
        write("checkpoint_decode", b"shipper-checkpoints 1 %08x\n" % zlib.crc32(body) + body)
    write("checkpoint_decode", b"shipper-checkpoints 9 0\n{}")
    write("checkpoint_decode", b"")
    for f in INDEX_DATE_FORMATS:
        write("index_date_format", f)
    for seg in BUFFER_SEGMENTS:
        write("buffer_frames", seg)
    for body in BULK_RESPONSES:
        write("bulk_response", body)
    for m in MULTILINE:
        write("multiline_group", m)
    for f in FIELDS:
        write("field_parse", f)
    for r in REDACTION:
        write("redaction", r)
    for g in GZIP_ROTATIONS:
        write("rotated_gzip", g)


if __name__ == "__main__":
    main()
